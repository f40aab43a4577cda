//! Where a worker's records go: the main sink, the named outputs, the dead letters; and how a
//! batch's outputs are written to them under the error policy.

use std::sync::Arc;

use anyhow::Result;

use super::dead_letters::DeadLetters;
use crate::connector::{BoxFuture, Refusals, Sink};
use crate::failure::Failure;
use crate::record::Record;

/// Where a worker's records go: the main sink, the named outputs, the dead letters.
pub(super) struct Sinks {
    pub main: Box<dyn Sink>,
    pub outputs: Vec<(Arc<str>, Box<dyn Sink>)>,
    pub dead_letters: Option<DeadLetters>,
}

impl Sinks {
    /// Batches written but not yet durable that the worker lets wait: enough for the sink that
    /// acknowledges latest (whole objects) to fill what it waits for.
    pub(super) fn max_unacked_batches(&self) -> usize {
        self.outputs
            .iter()
            .map(|(_, s)| s.max_unacked_batches())
            .chain(
                self.dead_letters
                    .as_ref()
                    .map(DeadLetters::max_unacked_batches),
            )
            .fold(self.main.max_unacked_batches(), usize::max)
            .max(1)
    }

    /// Writes a batch's outputs (`inputs`: for each, the input it was made from), each to its
    /// sink: those without an output name to the main sink, the others to their named output.
    /// Returns how many were written, a future per sink for their durability, and the records
    /// the sinks refused with their inputs, in input order.
    ///
    /// Under [`Refusals::StopAtInput`] nothing made from the first refused record's input or a
    /// later one is written to any sink: sinks that keep positions (tables) are written last,
    /// once the refusals of the others are known.
    pub(super) async fn write(
        &mut self,
        mut outputs: Vec<Record>,
        mut inputs: Vec<usize>,
        refusals: Refusals,
    ) -> Result<Written> {
        // The chain puts routed records last, each with a name this pipeline has.
        let split = outputs.iter().position(|r| r.output.is_some());
        let split = split.unwrap_or(outputs.len());
        let routed = outputs.split_off(split);
        let routed_inputs = inputs.split_off(split);
        let mut per_output: Vec<(Vec<Record>, Vec<usize>)> =
            self.outputs.iter().map(|_| Default::default()).collect();
        for (r, input) in routed.into_iter().zip(routed_inputs) {
            let to = self
                .outputs
                .iter()
                .position(|(name, _)| r.output.as_deref() == Some(&**name));
            if let Some(i) = to {
                per_output[i].0.push(r);
                per_output[i].1.push(input);
            }
        }
        // (sink, its records and their inputs, how to name it); `None` is the main sink.
        let mut targets: Vec<(Option<usize>, Vec<Record>, Vec<usize>)> =
            vec![(None, outputs, inputs)];
        targets.extend(
            per_output
                .into_iter()
                .enumerate()
                .map(|(i, (records, inputs))| (Some(i), records, inputs)),
        );
        targets.sort_by_key(|(to, ..)| self.sink(*to).keeps_positions());
        let mut written = Written::default();
        // Inputs from this one on are not written anywhere (StopAtInput).
        let mut cut = usize::MAX;
        for (to, records, inputs) in targets {
            let upto = inputs.partition_point(|&i| i < cut);
            let records = &records[..upto];
            if records.is_empty() {
                continue;
            }
            let name = match to {
                None => "the sink".to_owned(),
                Some(i) => format!("output `{}`", self.outputs[i].0),
            };
            let w = self.sink(to).write(records, refusals).await?;
            written.durables.push(w.durable);
            written.records += match (refusals, w.rejected.first()) {
                (Refusals::StopAtInput, Some(first)) => {
                    cut = cut.min(inputs[first.index]);
                    crate::connector::before_input_of(records, first.index)
                }
                _ => records.len() - w.rejected.len(),
            };
            written.refused.extend(w.rejected.into_iter().map(|r| {
                let failure = Failure {
                    position: records[r.index].position(),
                    message: format!("{name} cannot write it: {}", r.message),
                    plugin: None,
                    value: Some(records[r.index].value.clone()),
                };
                (inputs[r.index], failure)
            }));
        }
        written.refused.sort_by_key(|(input, _)| *input);
        if refusals == Refusals::StopAtInput {
            written.refused.truncate(1);
        }
        Ok(written)
    }

    fn sink(&mut self, to: Option<usize>) -> &mut Box<dyn Sink> {
        match to {
            None => &mut self.main,
            Some(i) => &mut self.outputs[i].1,
        }
    }
}

/// What [`Sinks::write`] did with a batch's outputs.
#[derive(Default)]
pub(super) struct Written {
    pub records: usize,
    pub durables: Vec<BoxFuture<'static, Result<()>>>,
    /// Records a sink refused, with the input each was made from.
    pub refused: Vec<(usize, Failure)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{Rejected, Written as SinkWritten};
    use std::sync::Mutex;

    /// Records what it is given; refuses values `BAD`, writing what `Refusals` allows.
    #[derive(Clone, Default)]
    struct Recorder {
        written: Arc<Mutex<Vec<String>>>,
        keeps_positions: bool,
    }

    impl Sink for Recorder {
        fn write<'a>(
            &'a mut self,
            records: &'a [Record],
            refusals: Refusals,
        ) -> BoxFuture<'a, Result<SinkWritten>> {
            let mut rejected = Vec::new();
            let mut upto = records.len();
            for (index, r) in records.iter().enumerate() {
                if &r.value[..] == b"BAD" {
                    rejected.push(Rejected {
                        index,
                        message: "bad".into(),
                    });
                    if refusals == Refusals::StopAtInput {
                        upto = crate::connector::before_input_of(records, index);
                        break;
                    }
                }
            }
            let mut written = self.written.lock().unwrap();
            written.extend(
                records[..upto]
                    .iter()
                    .filter(|r| &r.value[..] != b"BAD")
                    .map(|r| r.position()),
            );
            Box::pin(async move { Ok(SinkWritten::done(rejected)) })
        }

        fn fork(&self) -> Result<Box<dyn Sink>> {
            Ok(Box::new(self.clone()))
        }

        fn keeps_positions(&self) -> bool {
            self.keeps_positions
        }
    }

    fn made_from(input: u64, value: &str, output: Option<&str>) -> Record {
        Record {
            value: value.to_owned().into(),
            origin: Some(crate::record::Origin::At("in".into(), '#', input)),
            output: output.map(str::to_owned),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn under_fail_a_table_gets_nothing_from_the_input_another_sink_refused_or_later() {
        let table = Recorder {
            keeps_positions: true,
            ..Default::default()
        };
        let side = Recorder::default();
        let mut sinks = Sinks {
            main: Box::new(table.clone()),
            outputs: vec![("side".into(), Box::new(side.clone()))],
            dead_letters: None,
        };
        // Inputs 0..3 each make a table row; inputs 1 and 2 also make a side record, and the
        // side output refuses input 2's.
        let outputs = vec![
            made_from(0, "a", None),
            made_from(1, "b", None),
            made_from(2, "c", None),
            made_from(3, "d", None),
            made_from(1, "ok", Some("side")),
            made_from(2, "BAD", Some("side")),
        ];
        let written = sinks
            .write(outputs, vec![0, 1, 2, 3, 1, 2], Refusals::StopAtInput)
            .await
            .unwrap();
        assert_eq!(*table.written.lock().unwrap(), ["in#0", "in#1"]);
        assert_eq!(*side.written.lock().unwrap(), ["in#1"]);
        assert_eq!(written.records, 3);
        let refused: Vec<_> = written
            .refused
            .iter()
            .map(|(i, f)| (*i, f.position.clone()))
            .collect();
        assert_eq!(refused, [(2, "in#2".to_owned())]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_sink_stops_before_every_output_of_the_refused_input() {
        let main = Recorder::default();
        let mut sinks = Sinks {
            main: Box::new(main.clone()),
            outputs: Vec::new(),
            dead_letters: None,
        };
        // Input 1 made two records; the second is refused: neither is written, nor input 2's.
        let outputs = vec![
            made_from(0, "a", None),
            made_from(1, "b", None),
            made_from(1, "BAD", None),
            made_from(2, "c", None),
        ];
        let written = sinks
            .write(outputs.clone(), vec![0, 1, 1, 2], Refusals::StopAtInput)
            .await
            .unwrap();
        assert_eq!(*main.written.lock().unwrap(), ["in#0"]);
        assert_eq!(written.records, 1);
        // Under skip and dlq, everything else is written.
        main.written.lock().unwrap().clear();
        let written = sinks
            .write(outputs, vec![0, 1, 1, 2], Refusals::WriteTheRest)
            .await
            .unwrap();
        assert_eq!(*main.written.lock().unwrap(), ["in#0", "in#1", "in#2"]);
        assert_eq!((written.records, written.refused.len()), (3, 1));
    }
}
