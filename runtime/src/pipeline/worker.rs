//! One worker: its plugin instances and sink handles, the batches of its lanes in order, and an
//! acker that acknowledges each batch once everything it produced is durable.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tokio::sync::mpsc;

use super::dead_letters::DeadLetters;
use super::run_chain;
use super::turns::{CloseUnlessDone, Turns};
use crate::connector::{Ack, BoxFuture, Refusals, Sink, SourceBatch};
use crate::failure::{ErrorPolicy, Failure};
use crate::metrics::PipelineMetrics;
use crate::plugin::Stage;
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
    fn max_unacked_batches(&self) -> usize {
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
    async fn write(
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
struct Written {
    records: usize,
    durables: Vec<BoxFuture<'static, Result<()>>>,
    /// Records a sink refused, with the input each was made from.
    refused: Vec<(usize, Failure)>,
}

/// One worker: its own plugin instances and sink handles; batches in lane order. Acks go out in
/// the order batches came in, each once every sink the batch wrote to says it is durable. A
/// batch with a turn is written to the sinks only in its turn (see [`Turns`]).
pub(super) async fn work(
    batches: mpsc::Receiver<(SourceBatch, Option<u64>)>,
    chain: Vec<Stage>,
    sinks: Sinks,
    policy: ErrorPolicy,
    metrics: &PipelineMetrics,
    turns: Option<Arc<Turns>>,
) -> Result<()> {
    let guard = CloseUnlessDone::new(turns.clone());
    let result = work_batches(batches, chain, sinks, policy, metrics, turns.as_deref()).await;
    if result.is_ok() {
        guard.done();
    }
    result
}

async fn work_batches(
    mut batches: mpsc::Receiver<(SourceBatch, Option<u64>)>,
    mut chain: Vec<Stage>,
    mut sinks: Sinks,
    policy: ErrorPolicy,
    metrics: &PipelineMetrics,
    turns: Option<&Turns>,
) -> Result<()> {
    let names: Vec<Arc<str>> = sinks.outputs.iter().map(|(n, _)| n.clone()).collect();
    type Pending = (Vec<BoxFuture<'static, Result<()>>>, Option<Ack>);
    let (acks, mut pending) = mpsc::channel::<Pending>(sinks.max_unacked_batches());
    let acker = tokio::spawn(async move {
        while let Some((durables, ack)) = pending.recv().await {
            for durable in durables {
                durable.await?;
            }
            if let Some(ack) = ack {
                ack();
            }
        }
        anyhow::Ok(())
    });
    let result = async {
        while let Some((batch, turn)) = batches.recv().await {
            metrics.records_in.fetch_add(
                batch.records.len() as u64 + u64::from(batch.error.is_some()),
                Relaxed,
            );
            let started = std::time::Instant::now();
            // Dead letters are the inputs as they came: keep them until the batch is through.
            let inputs = sinks.dead_letters.as_ref().map(|_| {
                let mut inputs = batch.records.clone();
                inputs.extend(batch.error.as_ref().and_then(|e| e.input.clone()));
                inputs
            });
            let chained = tokio::task::block_in_place(|| {
                run_chain(&mut chain, batch.records, policy, &names)
            })?;
            metrics.observe_batch(started.elapsed());
            let turn = turns.zip(turn);
            if let Some((turns, turn)) = turn {
                turns.wait(turn).await?;
            }
            let refusals = match policy {
                ErrorPolicy::Fail => Refusals::StopAtInput,
                ErrorPolicy::Skip | ErrorPolicy::Dlq => Refusals::WriteTheRest,
            };
            let written = sinks
                .write(chained.records, chained.inputs, refusals)
                .await?;
            metrics
                .records_out
                .fetch_add(written.records as u64, Relaxed);
            let mut durables = written.durables;
            // In input order: a record a sink refused comes before the one a plugin failed
            // (outputs exist only for the inputs before it), and both before the source's error.
            let mut failures: Vec<Failure> = written.refused.into_iter().map(|(_, f)| f).collect();
            failures.extend(chained.failures);
            if let Some(e) = batch.error {
                failures.push(Failure {
                    position: e.position,
                    message: e.message,
                    plugin: None,
                });
            }
            if let (Some(dlq), false) = (&mut sinks.dead_letters, failures.is_empty()) {
                let letters = dlq
                    .write(&failures, inputs.as_deref().unwrap_or_default())
                    .await?;
                // The batch is acknowledged once its outputs and its dead letters are durable.
                durables.push(letters.durable);
            }
            for failure in failures {
                metrics.records_failed.fetch_add(1, Relaxed);
                match policy {
                    ErrorPolicy::Fail => {
                        // The outputs of the records before it are made durable before the run
                        // stops, but the batch is not acknowledged: a restart reads it again.
                        let _ = acks.send((durables, None)).await;
                        return Err(anyhow!(
                            "{failure} (use --on-error skip to skip bad records)"
                        ));
                    }
                    ErrorPolicy::Skip => tracing::warn!("skipped {failure}"),
                    ErrorPolicy::Dlq => tracing::warn!("dead-lettered {failure}"),
                }
            }
            // Under `fail` a failure above returned before this: later turns are never written.
            if let Some((turns, _)) = turn {
                turns.done();
            }
            if acks.send((durables, batch.ack)).await.is_err() {
                break; // the acker failed: its result says why
            }
        }
        anyhow::Ok(())
    }
    .await;
    drop(acks);
    // A sink that batches (into objects) writes what it holds when dropped.
    drop(sinks);
    let acked = acker
        .await
        .map_err(|e| anyhow!("a pipeline acker panicked: {e}"))?;
    result?;
    acked
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
