//! source -> batch -> plugin chain -> sink, with the error policy applied per record.

use anyhow::{anyhow, Result};
use tokio::sync::watch;

use crate::connector::{Sink, SinkClosed, Source};
use crate::plugin::{BatchError, TransformInstance};
use crate::record::Record;

/// What happens to a record that fails (bad input, a plugin error or trap, unwritable output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ErrorPolicy {
    /// Stop: write the outputs of every record before the bad one, then exit non-zero.
    #[default]
    Fail,
    /// Report the record on stderr, count it, and go on.
    Skip,
}

/// A record that failed, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub position: String,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {}: {}", self.position, self.message)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Records read from the source, bad ones included.
    pub records_in: u64,
    /// Records the sink accepted.
    pub records_out: u64,
    /// Records that failed and were skipped (or, with `fail`, the one that stopped the run).
    pub records_failed: u64,
}

pub struct Pipeline {
    pub source: Box<dyn Source>,
    pub transforms: Vec<TransformInstance>,
    pub sink: Box<dyn Sink>,
    pub policy: ErrorPolicy,
    pub batch_size: usize,
    /// Stop after this many source records.
    pub count: Option<u64>,
}

impl Pipeline {
    /// Runs until the source ends, `count` records were read, the sink's reader goes away, or
    /// `shutdown` turns true (the batch in flight is finished first).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<Stats> {
        let mut stats = Stats::default();
        loop {
            if *shutdown.borrow() {
                tracing::info!("shutdown requested: in-flight records written, stopping");
                break;
            }
            let max = match self.count {
                Some(count) => (count - stats.records_in).min(self.batch_size as u64) as usize,
                None => self.batch_size,
            };
            if max == 0 {
                break;
            }
            let batch = tokio::select! {
                biased;
                _ = shutdown.changed() => continue,
                batch = self.source.next_batch(max) => batch?,
            };
            let Some(batch) = batch else { break };
            stats.records_in += batch.records.len() as u64;

            let (outputs, mut failures) = tokio::task::block_in_place(|| {
                run_chain(&mut self.transforms, batch.records, self.policy)
            })?;
            let rejected = match self.sink.write(&outputs).await {
                Ok(rejected) => rejected,
                Err(e) if e.is::<SinkClosed>() => {
                    tracing::info!("the output was closed by its reader; stopping");
                    break;
                }
                Err(e) => return Err(e),
            };
            stats.records_out += (outputs.len() - rejected.len()) as u64;
            failures.extend(rejected.into_iter().map(|r| Failure {
                position: outputs[r.index].position().to_owned(),
                message: format!("the sink cannot write it: {}", r.message),
            }));
            if let Some(e) = batch.error {
                stats.records_in += 1;
                failures.push(Failure {
                    position: e.position,
                    message: e.message,
                });
            }
            for failure in failures {
                stats.records_failed += 1;
                match self.policy {
                    ErrorPolicy::Fail => {
                        return Err(anyhow!(
                            "{failure} (use --on-error skip to skip bad records)"
                        ));
                    }
                    ErrorPolicy::Skip => tracing::warn!("skipped {failure}"),
                }
            }
        }
        Ok(stats)
    }
}

/// Runs records through each transform in turn. With `fail`, records after the first failure
/// are dropped so that only outputs of records before it are written.
pub fn run_chain(
    stages: &mut [TransformInstance],
    mut records: Vec<Record>,
    policy: ErrorPolicy,
) -> Result<(Vec<Record>, Vec<Failure>)> {
    let mut failures = Vec::new();
    for stage in stages {
        if records.is_empty() {
            break;
        }
        let mut result = StageResult::default();
        isolate(stage, &records, 0, policy == ErrorPolicy::Fail, &mut result)?;
        let mut stage_failures: Vec<Failure> = result
            .failures
            .into_iter()
            .map(|(i, message)| Failure {
                position: records[i].position().to_owned(),
                message,
            })
            .collect();
        records = result.outputs;
        // A record routed to a named output leaves the chain there; this pipeline has none.
        if let Some(first) = records.iter().position(|r| r.output.is_some()) {
            let plugin = stage.plugin().name.clone();
            let routed = |r: &Record| Failure {
                position: r.position().to_owned(),
                message: format!(
                    "plugin {plugin} routed it to output `{}`, which this pipeline does not have",
                    r.output.as_deref().unwrap_or_default()
                ),
            };
            if policy == ErrorPolicy::Fail {
                // It comes before any failure the stage reported: stop there.
                stage_failures = vec![routed(&records[first])];
                records.truncate(first);
            } else {
                let (out, kept): (Vec<_>, Vec<_>) =
                    records.into_iter().partition(|r| r.output.is_some());
                stage_failures.extend(out.iter().map(routed));
                records = kept;
            }
        }
        failures.extend(stage_failures);
    }
    Ok((records, failures))
}

#[derive(Default)]
struct StageResult {
    outputs: Vec<Record>,
    /// (input index, error)
    failures: Vec<(usize, String)>,
    stopped: bool,
}

/// Processes `records` (which start at input index `base`); a batch that fails as a whole is
/// split in halves until the records that cause it stand alone, so one poison record never
/// takes its neighbours with it.
fn isolate(
    stage: &mut TransformInstance,
    records: &[Record],
    base: usize,
    stop_at_first: bool,
    out: &mut StageResult,
) -> Result<()> {
    if out.stopped || records.is_empty() {
        return Ok(());
    }
    match stage.process(records) {
        Ok(processed) => {
            let mut outputs = processed.outputs.into_iter();
            for (i, outcome) in processed.outcomes.into_iter().enumerate() {
                match outcome {
                    Ok(n) => out.outputs.extend(outputs.by_ref().take(n as usize)),
                    Err(message) => {
                        out.failures.push((
                            base + i,
                            format!("plugin {}: {message}", stage.plugin().name),
                        ));
                        if stop_at_first {
                            out.stopped = true;
                            return Ok(());
                        }
                    }
                }
            }
            Ok(())
        }
        Err(e @ BatchError::Restart { .. }) => Err(e.into()),
        Err(e) if records.len() == 1 => {
            out.failures.push((base, e.to_string()));
            out.stopped = stop_at_first;
            Ok(())
        }
        Err(e) => {
            tracing::debug!(
                records = records.len(),
                "batch failed ({e}); splitting it to isolate the bad records"
            );
            let mid = records.len() / 2;
            isolate(stage, &records[..mid], base, stop_at_first, out)?;
            isolate(stage, &records[mid..], base + mid, stop_at_first, out)
        }
    }
}
