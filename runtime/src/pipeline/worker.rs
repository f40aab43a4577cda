//! One worker: its plugin instances and sink handles, the batches of its lanes in order, and an
//! acker that acknowledges each batch once everything it produced is durable.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tokio::sync::mpsc;

use super::dead_letters::DeadLetters;
use super::run_chain;
use super::turns::Turns;
use crate::connector::{Ack, BoxFuture, Sink, SourceBatch};
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

    /// Writes a batch's outputs, each to its sink: those without an output name to the main
    /// sink, the others to their named output. Returns how many were written and a future per
    /// sink for their durability; records a sink refused become `failures`.
    async fn write(
        &mut self,
        mut outputs: Vec<Record>,
        failures: &mut Vec<Failure>,
    ) -> Result<(usize, Vec<BoxFuture<'static, Result<()>>>)> {
        // The chain puts routed records last, each with a name this pipeline has.
        let split = outputs.iter().position(|r| r.output.is_some());
        let routed = outputs.split_off(split.unwrap_or(outputs.len()));
        let mut per_output: Vec<Vec<Record>> = self.outputs.iter().map(|_| Vec::new()).collect();
        for r in routed {
            let to = self
                .outputs
                .iter()
                .position(|(name, _)| r.output.as_deref() == Some(&**name));
            if let Some(i) = to {
                per_output[i].push(r);
            }
        }
        let mut durables = Vec::new();
        let mut written = 0;
        let mut write = async |sink: &mut Box<dyn Sink>, records: &[Record], name: &str| {
            if records.is_empty() {
                return anyhow::Ok(());
            }
            let w = sink.write(records).await?;
            written += records.len() - w.rejected.len();
            failures.extend(w.rejected.into_iter().map(|r| Failure {
                position: records[r.index].position(),
                message: format!("{name} cannot write it: {}", r.message),
                plugin: None,
            }));
            durables.push(w.durable);
            Ok(())
        };
        write(&mut self.main, &outputs, "the sink").await?;
        for ((name, sink), records) in self.outputs.iter_mut().zip(&per_output) {
            write(sink, records, &format!("output `{name}`")).await?;
        }
        Ok((written, durables))
    }
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
    let result = work_batches(batches, chain, sinks, policy, metrics, turns.as_deref()).await;
    if let (Err(_), Some(turns)) = (&result, &turns) {
        turns.close();
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
            let (outputs, mut failures) = tokio::task::block_in_place(|| {
                run_chain(&mut chain, batch.records, policy, &names)
            })?;
            metrics.observe_batch(started.elapsed());
            let turn = turns.zip(turn);
            if let Some((turns, turn)) = turn {
                turns.wait(turn).await?;
            }
            let (written, mut durables) = sinks.write(outputs, &mut failures).await?;
            metrics.records_out.fetch_add(written as u64, Relaxed);
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
