//! source -> batch -> plugin chain -> sink, with the error policy applied per record.
//!
//! This file is the read loop: it cuts what the source has ready into batches and hands each to
//! the worker that owns its lane. `worker` runs a batch through the chain (`chain`, with poison
//! isolation) into the sinks and acknowledges it once durable; `dead_letters` writes failures.

mod chain;
mod checkpoint;
pub(crate) mod dead_letters;
pub(crate) mod generator;
mod pacer;
mod pieces;
mod reader;
mod sinks;
pub(crate) mod stateful;
mod turns;
mod worker;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::connector::{Sink, SinkClosed, Source, SourceBatch};
use crate::failure::ErrorPolicy;
use crate::metrics::PipelineMetrics;
use crate::plugin::{PluginSlot, Stage};
use checkpoint::Checkpoints;
use dead_letters::DeadLetters;
use pieces::{log_progress, split_at_bytes, MAX_BATCH_BYTES};
use stateful::Checkpointing;
use worker::Work;

pub(crate) use chain::run_chain;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Records read from the source, bad ones included.
    pub records_in: u64,
    /// Records the sink accepted.
    pub records_out: u64,
    /// Records that failed and were skipped (or, with `fail`, the one that stopped the run).
    pub records_failed: u64,
}

impl Stats {
    /// The pipeline's figures so far, from the counters its workers keep.
    pub fn of(metrics: &PipelineMetrics) -> Stats {
        Stats {
            records_in: metrics.records_in.load(Relaxed),
            records_out: metrics.records_out.load(Relaxed),
            records_failed: metrics.records_failed.load(Relaxed),
        }
    }
}

pub(crate) struct Pipeline {
    pub source: Box<dyn Source>,
    /// The transform chain; every worker gets its own instances (its own Stores) of each
    /// slot's live version, and cuts over to a new one at a batch boundary.
    pub plugins: Vec<Arc<PluginSlot>>,
    pub sink: Box<dyn Sink>,
    /// Named outputs: records a plugin routes to NAME go to its sink instead of `sink`.
    pub outputs: Vec<(Arc<str>, Box<dyn Sink>)>,
    pub policy: ErrorPolicy,
    pub batch_size: usize,
    /// Records per second the source may produce (0: no limit).
    pub rate: f64,
    /// Stop after this many source records.
    pub count: Option<u64>,
    /// At most this many workers; lanes (Kafka partitions) are spread over them, each lane
    /// always on the same worker so its order is kept.
    pub workers: usize,
    pub metrics: Arc<PipelineMetrics>,
    /// With `--on-error dlq`: where failed records go.
    pub dead_letters: Option<DeadLetters>,
    /// How often to log progress while records flow (`None`: never).
    pub progress_every: Option<std::time::Duration>,
    /// How a chain with stateful plugins checkpoints its state (`None`: no such plugin).
    pub checkpointing: Option<Arc<Checkpointing>>,
}

/// Batches queued per worker: bounded, so memory stays bounded when the sink is slower than the
/// source (batches awaiting acknowledgement are bounded by the sink).
const WORKER_QUEUE: usize = 4;

/// The first error of a pipeline's end; later ones are logged, never lost.
struct Errors(Option<anyhow::Error>);

impl Errors {
    fn add(&mut self, e: anyhow::Error) {
        match &self.0 {
            None => self.0 = Some(e),
            Some(_) => tracing::warn!("also: {e:#}"),
        }
    }
}

struct Worker {
    /// Batches (each with its turn to write when the source is spread in order) and barriers.
    batches: mpsc::Sender<Work>,
    done: JoinHandle<Result<()>>,
}

impl Pipeline {
    /// Runs until the source ends, `count` records were read, the sink's reader goes away, a
    /// record fails under `fail`, or `shutdown` turns true. Batches already read are finished,
    /// their outputs made durable and their source positions acknowledged before it returns.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<Stats> {
        let workers = self.workers.max(1);
        let _progress = self
            .progress_every
            .map(|every| log_progress(&self.metrics, every));
        // A worker that stops (failure, closed sink) says so here, so reading stops at once even
        // when the source has nothing more to read.
        let (stopped_tx, mut stopped) = watch::channel(false);
        let mut pool: Vec<Option<Worker>> = (0..workers).map(|_| None).collect();
        // One ordered stream into sinks that keep the order of writes: batches go round the
        // workers, written in turn. (Into objects, each worker's object would hold every
        // other batch: such a stream stays on one worker. A stateful chain keeps state per
        // lane: stdin is one lane, on one worker.)
        let in_order = self.sink.keeps_write_order()
            && self.outputs.iter().all(|(_, s)| s.keeps_write_order())
            && self
                .dead_letters
                .as_ref()
                .is_none_or(DeadLetters::keeps_write_order);
        let spread = self.source.spread_in_order() && in_order && self.checkpointing.is_none();
        let turns = spread.then(|| Arc::new(turns::Turns::new()));
        let mut checkpoints = self.checkpointing.clone().map(Checkpoints::new);
        let stored = checkpoints.as_ref().map(Checkpoints::stored);
        let (mut batches_read, mut next_turn) = (0usize, 0u64);
        // The first worker starts now, so a plugin whose `init` fails stops the run at once.
        pool[0] = Some(self.start_worker(&stopped_tx, turns.clone(), stored.clone())?);
        let mut records_in = 0u64;
        let mut pacer = pacer::Pacer::new(self.rate, Instant::now());
        let source = std::mem::replace(&mut self.source, Box::new(Finished));
        let mut reader = reader::Reader::start(source);
        // Records granted by the pacer for a batch asked for and not handed over yet.
        let mut granted: Option<usize> = None;
        // A source that fails, or a worker that cannot start, stops reading; what was read is
        // still finished and acknowledged below before the error is reported.
        let mut read_error = None;
        'read: loop {
            if *shutdown.borrow() {
                tracing::info!("shutdown requested: finishing the batches in flight");
                break;
            }
            if *stopped.borrow() {
                break;
            }
            let max = match self.count {
                Some(count) => {
                    count.saturating_sub(records_in).min(self.batch_size as u64) as usize
                }
                None => self.batch_size,
            };
            if max == 0 {
                break;
            }
            let wait = match granted {
                Some(_) => None,
                None => match pacer.grant(Instant::now(), max as u32) {
                    Ok(n) => {
                        granted = Some(n as usize);
                        None
                    }
                    Err(wait) => Some(wait),
                },
            };
            let checkpoint_due = checkpoint_due(checkpoints.as_ref());
            let batch = tokio::select! {
                biased;
                _ = shutdown.changed() => continue,
                _ = stopped.changed() => continue,
                _ = checkpoint_due => {
                    if let Some(c) = &mut checkpoints {
                        if let Err(e) = self.checkpoint(c, &pool).await {
                            // A worker that stopped says why itself.
                            if !e.is::<checkpoint::WorkerStopped>() {
                                read_error = Some(e);
                            }
                            break;
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => continue,
                batch = reader.next(granted.unwrap_or(max)), if granted.is_some() => batch,
            };
            let asked = granted.take().unwrap_or(max);
            let batch = match batch {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            };
            if records_in == 0 {
                tracing::info!("first records read");
            }
            let read = batch.records.len() + usize::from(batch.error.is_some());
            pacer.refund(asked.saturating_sub(read) as u32);
            records_in += read as u64;
            let slot = match turns {
                Some(_) => batches_read % workers,
                None => batch.lane as usize % workers,
            };
            batches_read += 1;
            if pool[slot].is_none() {
                match self.start_worker(&stopped_tx, turns.clone(), stored.clone()) {
                    Ok(worker) => pool[slot] = Some(worker),
                    Err(e) => {
                        read_error = Some(e);
                        break;
                    }
                }
            }
            let worker = pool[slot].as_ref().expect("started above");
            for piece in split_at_bytes(batch, MAX_BATCH_BYTES) {
                let turn = turns.as_ref().map(|_| next_turn);
                next_turn += 1;
                if worker.batches.send(Work::Batch(piece, turn)).await.is_err() {
                    break 'read; // the worker stopped: its result says why
                }
            }
        }
        let mut errors = Errors(read_error);
        let mut source = match reader.finish().await {
            Ok(source) => Some(source),
            Err(e) => {
                errors.add(e);
                None
            }
        };
        // The last checkpoint takes in everything read; it is stored before the sinks close.
        if let Some(c) = &mut checkpoints {
            match self.checkpoint(c, &pool).await {
                Ok(()) => {}
                Err(e) if e.is::<checkpoint::WorkerStopped>() => {}
                Err(e) => errors.add(e),
            }
            c.flush().await;
        }
        // Only the workers' handles on the sinks stay: a sink holding records back (a table
        // commits on a timer) writes them once its last handle is dropped, not at its next tick.
        let Pipeline {
            sink,
            outputs,
            dead_letters,
            metrics,
            ..
        } = self;
        drop((sink, outputs, dead_letters));
        // Every worker is told at once, so all their sink handles go together.
        let done: Vec<_> = pool
            .into_iter()
            .flatten()
            .map(|worker| {
                drop(worker.batches);
                worker.done
            })
            .collect();
        // The error to report is the cause: a read error comes before any worker stopped (the
        // loop stops reading once one has), and a worker's own error before the turns it
        // closed on the others, which are only its consequence.
        for done in done {
            match done.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is::<SinkClosed>() => {
                    tracing::info!("the output was closed by its reader; stopping")
                }
                Ok(Err(e)) if e.is::<turns::TurnsClosed>() => {}
                Ok(Err(e)) => errors.add(e),
                Err(e) => errors.add(anyhow!("a pipeline worker panicked: {e}")),
            }
        }
        // Positions are committed only for batches every worker acknowledged above.
        if let Some(source) = &mut source {
            if let Err(e) = source.finish().await {
                errors.add(e);
            }
        }
        if let Some(e) = errors.0 {
            return Err(e);
        }
        // Closing the endpoints (leaving a consumer group) follows when they are dropped.
        tracing::info!("every output durable, source positions committed");
        Ok(Stats::of(&metrics))
    }

    /// A checkpoint across the workers started, sealing the sinks that keep positions.
    async fn checkpoint(&mut self, c: &mut Checkpoints, pool: &[Option<Worker>]) -> Result<()> {
        let workers: Vec<_> = pool.iter().flatten().map(|w| &w.batches).collect();
        let mut sinks: Vec<&mut Box<dyn Sink>> = std::iter::once(&mut self.sink)
            .chain(self.outputs.iter_mut().map(|(_, s)| s))
            .collect();
        c.take(&workers, &mut sinks, &self.metrics).await
    }

    fn start_worker(
        &self,
        stopped: &watch::Sender<bool>,
        turns: Option<Arc<turns::Turns>>,
        stored: Option<watch::Receiver<u64>>,
    ) -> Result<Worker> {
        let chain = self
            .plugins
            .iter()
            .map(|slot| Stage::new(slot.clone()))
            .collect::<Result<Vec<_>>>()?;
        let stateful = match (&self.checkpointing, stored) {
            (Some(config), Some(checkpointed)) => {
                let indices: Vec<usize> = chain
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.instance.is_stateful())
                    .map(|(i, _)| i)
                    .collect();
                Some(worker::StatefulWork {
                    lanes: stateful::Lanes::new(config.clone(), indices, chain.len()),
                    checkpointed,
                })
            }
            _ => None,
        };
        let sinks = sinks::Sinks {
            main: self.sink.fork()?,
            outputs: self
                .outputs
                .iter()
                .map(|(name, sink)| Ok((name.clone(), sink.fork()?)))
                .collect::<Result<_>>()?,
            dead_letters: self
                .dead_letters
                .as_ref()
                .map(DeadLetters::fork)
                .transpose()?,
        };
        let (batches, rx) = mpsc::channel(WORKER_QUEUE);
        let (policy, stopped, metrics) = (self.policy, stopped.clone(), self.metrics.clone());
        // Its log lines carry the pipeline's span.
        let done = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result =
                    worker::work(rx, chain, sinks, policy, &metrics, turns, stateful).await;
                stopped.send_replace(true);
                result
            },
            tracing::Span::current(),
        ));
        Ok(Worker { batches, done })
    }
}

/// Resolves when the next checkpoint is due, by time or because a sink asks for one (a
/// request made while nobody waits is kept for the next wait); never without checkpoints.
async fn checkpoint_due(checkpoints: Option<&Checkpoints>) {
    match checkpoints {
        Some(c) => {
            tokio::select! {
                _ = tokio::time::sleep_until(c.next) => {}
                _ = c.config.requests.notified() => {}
            }
        }
        None => std::future::pending().await,
    }
}

/// What stands in for the source once its reader has it.
struct Finished;

impl Source for Finished {
    fn next_batch(
        &mut self,
        _max: usize,
    ) -> crate::connector::BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(async { Ok(None) })
    }
}

#[cfg(test)]
mod tests;
