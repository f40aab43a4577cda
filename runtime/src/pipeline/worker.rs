//! One worker: its plugin instances and sink handles, the batches of its lanes in order, and an
//! acker that acknowledges each batch once everything it produced is durable (and, in a
//! stateful pipeline, once a checkpoint holds the state it made).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::sync::{mpsc, watch};

use super::chain::{Chained, LaneSet};
use super::run_chain;
use super::sinks::Sinks;
use super::stateful::{Barrier, LaneKey, Lanes};
use super::turns::{CloseUnlessDone, Turns};
use crate::connector::{Ack, BoxFuture, RecordError, Refusals, SourceBatch};
use crate::failure::{ErrorPolicy, Failure};
use crate::metrics::PipelineMetrics;
use crate::plugin::Stage;
use crate::record::Record;

/// What a worker is handed, in order. (Batches, the hot path, are not boxed.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Work {
    /// A batch, with its turn to write when the source is spread in order.
    Batch(SourceBatch, Option<u64>),
    /// A checkpoint barrier (stateful pipelines).
    Barrier(Barrier),
}

/// How often a stateful worker looks for processing-time timers due while no batch comes.
const TIMER_TICK: Duration = Duration::from_millis(100);

/// What a stateful worker needs besides its chain and sinks.
pub(super) struct StatefulWork {
    pub lanes: Lanes,
    /// The last checkpoint stored (its sequence number): acks wait for the one that holds
    /// their batch's state.
    pub checkpointed: watch::Receiver<u64>,
}

/// One worker: its own plugin instances and sink handles; batches in lane order. Acks go out in
/// the order batches came in, each once every sink the batch wrote to says it is durable. A
/// batch with a turn is written to the sinks only in its turn (see [`Turns`]).
pub(super) async fn work(
    batches: mpsc::Receiver<Work>,
    chain: Vec<Stage>,
    sinks: Sinks,
    policy: ErrorPolicy,
    metrics: &PipelineMetrics,
    turns: Option<Arc<Turns>>,
    stateful: Option<StatefulWork>,
) -> Result<()> {
    let guard = CloseUnlessDone::new(turns.clone());
    let names: Vec<Arc<str>> = sinks.outputs.iter().map(|(n, _)| n.clone()).collect();
    let (acks, pending) = mpsc::channel::<Pending>(sinks.max_unacked_batches());
    let checkpointed = stateful.as_ref().map(|s| s.checkpointed.clone());
    let acker = tokio::spawn(acknowledge(pending, checkpointed));
    let mut worker = Worker {
        chain,
        sinks,
        policy,
        metrics,
        names,
        acks,
        lanes: stateful.map(|s| s.lanes),
        seq: 1,
        reported: (0, 0, 0),
    };
    let result = worker.run(batches, turns.as_deref()).await;
    let Worker { acks, sinks, .. } = worker;
    drop(acks);
    // A sink that batches (into objects) writes what it holds when dropped.
    drop(sinks);
    let acked = acker
        .await
        .map_err(|e| anyhow!("a pipeline acker panicked: {e}"))?;
    if result.is_ok() && acked.is_ok() {
        guard.done();
    }
    result?;
    acked
}

/// A batch's durability futures, its ack, and the checkpoint it belongs to.
type Pending = (Vec<BoxFuture<'static, Result<()>>>, Option<Ack>, u64);

/// Acknowledges batches in order, each once its outputs are durable and, when `checkpointed`
/// is given, once the checkpoint holding its state is stored.
async fn acknowledge(
    mut pending: mpsc::Receiver<Pending>,
    mut checkpointed: Option<watch::Receiver<u64>>,
) -> Result<()> {
    while let Some((durables, ack, seq)) = pending.recv().await {
        for durable in durables {
            durable.await?;
        }
        let Some(ack) = ack else { continue };
        if let Some(checkpointed) = &mut checkpointed {
            if checkpointed.wait_for(|c| *c >= seq).await.is_err() {
                return Ok(()); // the pipeline stopped: what is not checkpointed is read again
            }
        }
        ack();
    }
    Ok(())
}

struct Worker<'m> {
    chain: Vec<Stage>,
    sinks: Sinks,
    policy: ErrorPolicy,
    metrics: &'m PipelineMetrics,
    names: Vec<Arc<str>>,
    acks: mpsc::Sender<Pending>,
    lanes: Option<Lanes>,
    /// The checkpoint the batches handled now belong to.
    seq: u64,
    /// This worker's state sizes as last reported to the metrics.
    reported: (usize, usize, usize),
}

/// What the outputs of a batch (or of timers) come with.
struct Outputs {
    chained: Chained,
    /// The inputs as they came, for dead letters.
    inputs: Option<Vec<Record>>,
    error: Option<RecordError>,
    ack: Option<Ack>,
}

impl Worker<'_> {
    async fn run(
        &mut self,
        mut batches: mpsc::Receiver<Work>,
        turns: Option<&Turns>,
    ) -> Result<()> {
        let mut tick = tokio::time::interval(TIMER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let work = tokio::select! {
                work = batches.recv() => match work {
                    Some(work) => work,
                    None => return Ok(()),
                },
                _ = tick.tick(), if self.lanes.is_some() => {
                    self.fire_processing_timers().await?;
                    continue;
                }
            };
            match work {
                Work::Batch(batch, turn) => {
                    if !self.batch(batch, turns.zip(turn)).await? {
                        return Ok(()); // the acker failed: its result says why
                    }
                }
                Work::Barrier(barrier) => self.barrier(barrier).await,
            }
        }
    }

    /// Runs a batch through the chain into the sinks; `false` when the acker is gone.
    async fn batch(&mut self, batch: SourceBatch, turn: Option<(&Turns, u64)>) -> Result<bool> {
        let SourceBatch {
            mut records,
            error,
            ack,
            restart,
            ends_lane,
            ..
        } = batch;
        self.metrics
            .records_in
            .fetch_add(records.len() as u64 + u64::from(error.is_some()), Relaxed);
        let started = std::time::Instant::now();
        let key = self.lanes.as_ref().and_then(|_| LaneKey::of(&records));
        let mut lane: Option<&mut LaneSet> = None;
        if let (Some(lanes), Some(key)) = (self.lanes.as_mut(), key) {
            // What the table holds is in the restored state already: not taken in twice.
            if let Some(keeper) = lanes.keeper().cloned() {
                records.retain(|r| !r.lane().is_some_and(|(l, n)| keeper.covers(&l, n)));
            }
            let set = lanes.lane(key, restart).await?;
            set.ending = ends_lane;
            lane = Some(set);
        }
        // Dead letters are the inputs as they came: keep them until the batch is through.
        let inputs = self.sinks.dead_letters.as_ref().map(|_| {
            let mut inputs = records.clone();
            inputs.extend(error.as_ref().and_then(|e| e.input.clone()));
            inputs
        });
        let (chain, policy, names) = (&mut self.chain, self.policy, &self.names);
        let chained =
            tokio::task::block_in_place(|| run_chain(chain, records, policy, names, lane))?;
        self.metrics.observe_batch(started.elapsed());
        if let Some((turns, turn)) = turn {
            turns.wait(turn).await?;
        }
        let sent = self
            .write(Outputs {
                chained,
                inputs,
                error,
                ack,
            })
            .await?;
        // Under `fail` a failure returned before this: later turns are never written.
        if let Some((turns, _)) = turn {
            turns.done();
        }
        Ok(sent)
    }

    /// Writes outputs to the sinks, applies the error policy to the failures and hands the
    /// batch to the acker; `false` when the acker is gone.
    async fn write(&mut self, out: Outputs) -> Result<bool> {
        let refusals = match self.policy {
            ErrorPolicy::Fail => Refusals::StopAtInput,
            ErrorPolicy::Skip | ErrorPolicy::Dlq => Refusals::WriteTheRest,
        };
        let written = self
            .sinks
            .write(out.chained.records, out.chained.inputs, refusals)
            .await?;
        self.metrics
            .records_out
            .fetch_add(written.records as u64, Relaxed);
        let mut durables = written.durables;
        // In input order: a record a sink refused comes before the one a plugin failed
        // (outputs exist only for the inputs before it), and both before the source's error.
        let mut failures: Vec<Failure> = written.refused.into_iter().map(|(_, f)| f).collect();
        failures.extend(out.chained.failures);
        if let Some(e) = out.error {
            failures.push(Failure {
                position: e.position,
                message: e.message,
                plugin: None,
                value: e.input.as_ref().map(|r| r.value.clone()),
            });
        }
        if let (Some(dlq), false) = (&mut self.sinks.dead_letters, failures.is_empty()) {
            let letters = dlq
                .write(&failures, out.inputs.as_deref().unwrap_or_default())
                .await?;
            // The batch is acknowledged once its outputs and its dead letters are durable.
            durables.push(letters.durable);
        }
        // The last few are kept for the admin API.
        for failure in &failures[failures.len().saturating_sub(20)..] {
            self.metrics.note_failure(failure);
        }
        for failure in failures {
            self.metrics.records_failed.fetch_add(1, Relaxed);
            match self.policy {
                ErrorPolicy::Fail => {
                    // The outputs of the records before it are made durable before the run
                    // stops, but the batch is not acknowledged: a restart reads it again.
                    let _ = self.acks.send((durables, None, self.seq)).await;
                    return Err(anyhow!(
                        "{failure} (use --on-error skip to skip bad records)"
                    ));
                }
                ErrorPolicy::Skip => tracing::warn!("skipped {failure}"),
                ErrorPolicy::Dlq => tracing::warn!("dead-lettered {failure}"),
            }
        }
        Ok(self.acks.send((durables, out.ack, self.seq)).await.is_ok())
    }

    /// Fires the processing-time timers due in every lane (no batch needed).
    async fn fire_processing_timers(&mut self) -> Result<()> {
        let Some(lanes) = self.lanes.as_mut() else {
            return Ok(());
        };
        for name in lanes.due(crate::state::now_ms()) {
            let lanes = self.lanes.as_mut().expect("stateful");
            let lane = lanes.get(&name);
            let (chain, policy, names) = (&mut self.chain, self.policy, &self.names);
            let chained =
                tokio::task::block_in_place(|| run_chain(chain, Vec::new(), policy, names, lane))?;
            let out = Outputs {
                chained,
                inputs: None,
                error: None,
                ack: None,
            };
            self.write(out).await?;
        }
        Ok(())
    }

    /// A checkpoint barrier: everything before it is written, so this worker's lanes' state
    /// is what the checkpoint holds. Waits until the pipeline has sealed the sinks.
    async fn barrier(&mut self, barrier: Barrier) {
        let snapshots = self.lanes.as_mut().map(Lanes::snapshot).unwrap_or_default();
        if let Some(lanes) = &self.lanes {
            let now = lanes.sizes();
            self.metrics.add_state(self.reported, now);
            self.reported = now;
        }
        let Barrier {
            seq,
            reply,
            mut resume,
        } = barrier;
        if reply.send(snapshots).is_ok() {
            let _ = resume.wait_for(|go| *go).await;
        }
        self.seq = seq + 1;
    }
}
