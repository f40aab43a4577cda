//! Checkpoints of a stateful pipeline. Every `every` (and when a sink asks), the read loop sends
//! a barrier behind the batches of every worker; each worker, having written everything before
//! it, hands over its lanes' changed state and waits. The sinks that keep positions (a table)
//! then seal what they hold as the checkpoint's commit, the workers go on, and the states are
//! stored in the background; the sealed commit lands only once they are, with each lane's
//! position and the checkpoint its state is in. Acknowledgements of the batches before the
//! barrier wait for the states too, so a source never moves past state that is not stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::stateful::{Barrier, Checkpointing, LaneSnapshot};
use super::worker::Work;
use crate::connector::{backoff, Seal, Sink};
use crate::metrics::PipelineMetrics;

/// A worker stopped before a checkpoint reached it: a consequence of its own error, which is
/// the one to report.
#[derive(Debug, thiserror::Error)]
#[error("a worker stopped before checkpoint {0}")]
pub(super) struct WorkerStopped(u64);

/// The read loop's side of checkpointing.
pub(super) struct Checkpoints {
    pub config: Arc<Checkpointing>,
    /// The sequence number of the next checkpoint (the first batches belong to 1).
    seq: u64,
    /// Stored checkpoints, by sequence number: acks wait on it.
    stored: watch::Sender<u64>,
    /// The store of the last checkpoint, which the next one waits for (in order).
    storing: Option<JoinHandle<()>>,
    pub next: tokio::time::Instant,
}

impl Checkpoints {
    pub fn new(config: Arc<Checkpointing>) -> Self {
        let next = tokio::time::Instant::now() + config.every;
        Checkpoints {
            config,
            seq: 1,
            stored: watch::Sender::new(0),
            storing: None,
            next,
        }
    }

    /// What acks wait on.
    pub fn stored(&self) -> watch::Receiver<u64> {
        self.stored.subscribe()
    }

    /// Takes a checkpoint across `workers`, sealing `sinks` at it.
    pub async fn take(
        &mut self,
        workers: &[&tokio::sync::mpsc::Sender<Work>],
        sinks: &mut [&mut Box<dyn Sink>],
        metrics: &Arc<PipelineMetrics>,
    ) -> Result<()> {
        let started = Instant::now();
        let (seq, id) = (self.seq, self.config.store.next_epoch());
        self.seq += 1;
        self.next = tokio::time::Instant::now() + self.config.every;
        let (resume, paused) = watch::channel(false);
        let mut replies = Vec::with_capacity(workers.len());
        for w in workers {
            let (reply, answer) = oneshot::channel();
            let barrier = Barrier {
                seq,
                reply,
                resume: paused.clone(),
            };
            w.send(Work::Barrier(barrier))
                .await
                .map_err(|_| WorkerStopped(id))?;
            replies.push(answer);
        }
        let mut lanes: Vec<LaneSnapshot> = Vec::new();
        for answer in replies {
            lanes.extend(answer.await.map_err(|_| WorkerStopped(id))?);
        }
        let (durable_tx, durable) = watch::channel(None);
        let seal = Seal {
            id,
            positions: lanes
                .iter()
                .filter_map(|l| Some((l.lane.to_string(), l.position?)))
                .collect(),
            states: lanes
                .iter()
                .filter(|l| !l.states.is_empty())
                .map(|l| l.lane.to_string())
                .collect(),
            durable,
        };
        for sink in sinks.iter_mut() {
            sink.seal(&seal).await?;
        }
        let paused_for = started.elapsed();
        resume.send_replace(true);
        let previous = self.storing.take();
        let (config, stored, metrics) = (self.config.clone(), self.stored.clone(), metrics.clone());
        self.storing = Some(tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let bytes: usize = lanes
                .iter()
                .flat_map(|l| &l.states)
                .map(|(_, b)| b.len())
                .sum();
            let ok = store(&config, id, lanes).await;
            durable_tx.send_replace(Some(ok));
            if ok {
                stored.send_replace(seq);
                metrics.observe_checkpoint(started.elapsed(), bytes);
                tracing::debug!(
                    checkpoint = id,
                    bytes,
                    paused_ms = paused_for.as_millis() as u64,
                    took_ms = started.elapsed().as_millis() as u64,
                    "checkpoint stored"
                );
            }
        }));
        Ok(())
    }

    /// Waits until every checkpoint taken is stored (at the end of a run).
    pub async fn flush(&mut self) {
        if let Some(storing) = self.storing.take() {
            let _ = storing.await;
        }
    }
}

/// Stores the lanes' states of checkpoint `id` and, without a sink that keeps positions, names
/// them each lane's newest. Retries with backoff: a checkpoint not stored holds back every
/// acknowledgement after it. Gives up only when the run stops.
async fn store(config: &Checkpointing, id: u64, lanes: Vec<LaneSnapshot>) -> bool {
    let store = &config.store;
    let mut delays = backoff::delays(Duration::from_millis(200), Duration::from_secs(10));
    for lane in &lanes {
        for (stage, bytes) in &lane.states {
            loop {
                let saved = async {
                    store.save(*stage, &lane.lane, id, bytes.clone()).await?;
                    if config.keeper.is_none() {
                        store.set_latest(*stage, &lane.lane, id).await?;
                    }
                    anyhow::Ok(())
                }
                .await;
                match saved {
                    Ok(()) => {
                        // The snapshots before the committed one are no longer restored from.
                        let committed = match &config.keeper {
                            Some(keeper) => keeper.state_epoch(&lane.lane),
                            None => Some(id),
                        };
                        if let Some(committed) = committed {
                            store.prune(*stage, &lane.lane, committed).await;
                        }
                        break;
                    }
                    Err(e) => {
                        let delay = delays.next().unwrap_or(Duration::from_secs(10));
                        tracing::warn!(
                            checkpoint = id,
                            "storing state: {e:#} (retrying in {delay:?})"
                        );
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }
    true
}
