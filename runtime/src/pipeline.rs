//! source -> batch -> plugin chain -> sink, with the error policy applied per record.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::connector::{Ack, BoxFuture, Sink, SinkClosed, Source, SourceBatch};
use crate::dead_letters::DeadLetters;
use crate::metrics::PipelineMetrics;
use crate::plugin::{BatchError, PluginSlot, Stage, TransformInstance};
use crate::record::Record;

/// What happens to a record that fails (bad input, a plugin error or trap, unwritable output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// Stop: write the outputs of every record before the bad one, then exit non-zero.
    #[default]
    Fail,
    /// Report the record on stderr, count it, and go on.
    Skip,
    /// Send the input record, unchanged, with where and why it failed, to the dead-letter
    /// endpoint (--dlq), count it, and go on.
    Dlq,
}

/// A record that failed, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub position: String,
    pub message: String,
    /// The plugin (name, sha256) that failed it, if one did.
    pub plugin: Option<(Arc<str>, String)>,
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

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.records_failed += o.records_failed;
    }
}

pub struct Pipeline {
    pub source: Box<dyn Source>,
    /// The transform chain; every worker gets its own instances (its own Stores) of each
    /// slot's live version, and cuts over to a new one at a batch boundary.
    pub plugins: Vec<Arc<PluginSlot>>,
    pub sink: Box<dyn Sink>,
    pub policy: ErrorPolicy,
    pub batch_size: usize,
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
}

/// Batches queued per worker: bounded, so memory stays bounded when the sink is slower than the
/// source (batches awaiting acknowledgement are bounded by the sink).
const WORKER_QUEUE: usize = 4;

/// A batch's records are cut into plugin calls of at most this many bytes (keys and values), so
/// large records stay within the plugin's memory cap at any batch size.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Cuts `batch` into pieces of at most `max_bytes` (at least one record each) for the same
/// worker. Only the last piece carries the ack and the source error: a worker acks in order, so
/// the source position moves once every piece is durable.
fn split_at_bytes(mut batch: SourceBatch, max_bytes: usize) -> Vec<SourceBatch> {
    let size = |r: &Record| r.value.len() + r.key.as_ref().map_or(0, |k| k.len());
    if batch.records.iter().map(size).sum::<usize>() <= max_bytes {
        return vec![batch];
    }
    let mut pieces = Vec::new();
    let mut records = std::mem::take(&mut batch.records).into_iter().peekable();
    while records.peek().is_some() {
        let mut piece = Vec::new();
        let mut bytes = 0;
        while let Some(r) = records.next_if(|r| piece.is_empty() || bytes + size(r) <= max_bytes) {
            bytes += size(&r);
            piece.push(r);
        }
        pieces.push(SourceBatch {
            records: piece,
            error: None,
            lane: batch.lane,
            ack: None,
        });
    }
    let last = pieces.last_mut().expect("the batch had records");
    last.ack = batch.ack.take();
    last.error = batch.error.take();
    pieces
}

/// Logs the pipeline's counters and rate every `every` while they move, until dropped.
fn log_progress(metrics: &Arc<PipelineMetrics>, every: std::time::Duration) -> AbortOnDrop {
    let metrics = metrics.clone();
    let task = async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = (0, 0, 0);
        loop {
            tick.tick().await;
            let now = (
                metrics.records_in.load(Relaxed),
                metrics.records_out.load(Relaxed),
                metrics.records_failed.load(Relaxed),
            );
            if now != last {
                let rate = (now.0 - last.0) as f64 / every.as_secs_f64();
                let (records_in, records_out, records_failed) = now;
                tracing::info!(
                    records_in,
                    records_out,
                    records_failed,
                    "progress: {rate:.0} records/s in"
                );
                last = now;
            }
        }
    };
    AbortOnDrop(tokio::spawn(tracing::Instrument::instrument(
        task,
        tracing::Span::current(),
    )))
}

/// Stops a background task when the owner goes, however it returns.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Worker {
    batches: mpsc::Sender<SourceBatch>,
    done: JoinHandle<Result<Stats>>,
}

impl Pipeline {
    /// Runs until the source ends, `count` records were read, the sink's reader goes away, a
    /// record fails under `fail`, or `shutdown` turns true. Batches already read are finished,
    /// their outputs made durable and their source positions acknowledged before it returns.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<Stats> {
        let workers = self.workers.max(1);
        let _progress = self
            .progress_every
            .map(|every| log_progress(&self.metrics, every));
        // A worker that stops (failure, closed sink) says so here, so reading stops at once even
        // when the source has nothing more to read.
        let (stopped_tx, mut stopped) = watch::channel(false);
        let mut pool: Vec<Option<Worker>> = (0..workers).map(|_| None).collect();
        // The first worker starts now, so a plugin whose `init` fails stops the run at once.
        pool[0] = Some(self.start_worker(&stopped_tx)?);
        let mut records_in = 0u64;
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
            let batch = tokio::select! {
                biased;
                _ = shutdown.changed() => continue,
                _ = stopped.changed() => continue,
                batch = self.source.next_batch(max) => batch?,
            };
            let Some(batch) = batch else { break };
            if records_in == 0 {
                tracing::info!("first records read");
            }
            records_in += batch.records.len() as u64 + u64::from(batch.error.is_some());
            let slot = batch.lane as usize % workers;
            if pool[slot].is_none() {
                pool[slot] = Some(self.start_worker(&stopped_tx)?);
            }
            let worker = pool[slot].as_ref().expect("started above");
            for piece in split_at_bytes(batch, MAX_BATCH_BYTES) {
                if worker.batches.send(piece).await.is_err() {
                    break 'read; // the worker stopped: its result says why
                }
            }
        }
        let mut stats = Stats::default();
        let mut first_error = None;
        for worker in pool.into_iter().flatten() {
            drop(worker.batches);
            match worker
                .done
                .await
                .map_err(|e| anyhow!("a pipeline worker panicked: {e}"))?
            {
                Ok(s) => stats += s,
                Err(e) if e.is::<SinkClosed>() => {
                    tracing::info!("the output was closed by its reader; stopping")
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        // Positions are committed only for batches every worker acknowledged above.
        let finished = self.source.finish().await;
        if let Some(e) = first_error {
            return Err(e);
        }
        finished?;
        // Closing the endpoints (leaving a consumer group) follows when they are dropped.
        tracing::info!("every output durable, source positions committed");
        Ok(stats)
    }

    fn start_worker(&self, stopped: &watch::Sender<bool>) -> Result<Worker> {
        let chain = self
            .plugins
            .iter()
            .map(|slot| Stage::new(slot.clone()))
            .collect::<Result<Vec<_>>>()?;
        let sink = self.sink.fork()?;
        let dead_letters = self
            .dead_letters
            .as_ref()
            .map(DeadLetters::fork)
            .transpose()?;
        let (batches, rx) = mpsc::channel(WORKER_QUEUE);
        let (policy, stopped, metrics) = (self.policy, stopped.clone(), self.metrics.clone());
        // Its log lines carry the pipeline's span.
        let done = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = work(rx, chain, sink, dead_letters, policy, &metrics).await;
                stopped.send_replace(true);
                result
            },
            tracing::Span::current(),
        ));
        Ok(Worker { batches, done })
    }
}

/// One worker: its own plugin instances and sink handle; batches in lane order. Acks go out in
/// the order batches came in, each once the sink says its outputs are durable.
async fn work(
    mut batches: mpsc::Receiver<SourceBatch>,
    mut chain: Vec<Stage>,
    mut sink: Box<dyn Sink>,
    mut dead_letters: Option<DeadLetters>,
    policy: ErrorPolicy,
    metrics: &PipelineMetrics,
) -> Result<Stats> {
    let (acks, mut pending) = mpsc::channel::<(BoxFuture<'static, Result<()>>, Option<Ack>)>(
        sink.max_unacked_batches().max(1),
    );
    let acker = tokio::spawn(async move {
        while let Some((durable, ack)) = pending.recv().await {
            durable.await?;
            if let Some(ack) = ack {
                ack();
            }
        }
        anyhow::Ok(())
    });
    let mut stats = Stats::default();
    let result = async {
        while let Some(batch) = batches.recv().await {
            stats.records_in += batch.records.len() as u64;
            metrics.records_in.fetch_add(
                batch.records.len() as u64 + u64::from(batch.error.is_some()),
                Relaxed,
            );
            let started = std::time::Instant::now();
            // Dead letters are the inputs as they came: keep them until the batch is through.
            let inputs = dead_letters.as_ref().map(|_| batch.records.clone());
            let (outputs, mut failures) =
                tokio::task::block_in_place(|| run_chain(&mut chain, batch.records, policy))?;
            metrics.observe_batch(started.elapsed());
            let written = sink.write(&outputs).await?;
            stats.records_out += (outputs.len() - written.rejected.len()) as u64;
            metrics
                .records_out
                .fetch_add((outputs.len() - written.rejected.len()) as u64, Relaxed);
            failures.extend(written.rejected.into_iter().map(|r| Failure {
                position: outputs[r.index].position().to_owned(),
                message: format!("the sink cannot write it: {}", r.message),
                plugin: None,
            }));
            if let Some(e) = batch.error {
                stats.records_in += 1;
                failures.push(Failure {
                    position: e.position,
                    message: e.message,
                    plugin: None,
                });
            }
            let mut durable = written.durable;
            if let (Some(dlq), false) = (&mut dead_letters, failures.is_empty()) {
                let letters = dlq
                    .write(&failures, inputs.as_deref().unwrap_or_default())
                    .await?;
                let (main, dead) = (durable, letters.durable);
                // The batch is acknowledged once its outputs and its dead letters are durable.
                durable = Box::pin(async move {
                    main.await?;
                    dead.await
                });
            }
            for failure in failures {
                stats.records_failed += 1;
                metrics.records_failed.fetch_add(1, Relaxed);
                match policy {
                    // The batch is not acknowledged: a restart reads it again.
                    ErrorPolicy::Fail => {
                        return Err(anyhow!(
                            "{failure} (use --on-error skip to skip bad records)"
                        ))
                    }
                    ErrorPolicy::Skip => tracing::warn!("skipped {failure}"),
                    ErrorPolicy::Dlq => tracing::warn!("dead-lettered {failure}"),
                }
            }
            if acks.send((durable, batch.ack)).await.is_err() {
                break; // the acker failed: its result says why
            }
        }
        anyhow::Ok(())
    }
    .await;
    drop(acks);
    // A sink that batches (into objects) writes what it holds when dropped.
    drop(sink);
    let acked = acker
        .await
        .map_err(|e| anyhow!("a pipeline acker panicked: {e}"))?;
    result?;
    acked?;
    Ok(stats)
}

/// Runs records through each transform in turn, each stage on its slot's live version (cut
/// over here, at the batch boundary). With `fail`, records after the first failure are dropped
/// so that only outputs of records before it are written.
pub fn run_chain(
    stages: &mut [Stage],
    mut records: Vec<Record>,
    policy: ErrorPolicy,
) -> Result<(Vec<Record>, Vec<Failure>)> {
    let mut failures = Vec::new();
    for stage in stages {
        if records.is_empty() {
            break;
        }
        if let Some(took) = stage.refresh() {
            tracing::debug!(pipeline = %stage.slot.pipeline, slot = stage.slot.index, sha256 = %stage.version.plugin.compiled.sha256, cutover_us = took.as_micros() as u64, "cut over");
        }
        let result = loop {
            let mut result = StageResult::default();
            let stop_at_first = policy == ErrorPolicy::Fail;
            isolate(&mut stage.instance, &records, 0, stop_at_first, &mut result)?;
            let seen = match result.failures.first() {
                Some((i, _)) if result.stopped => *i + 1,
                _ => records.len(),
            };
            stage
                .slot
                .observe(&stage.version, seen as u64, result.failures.len() as u64);
            if stage.version.rolled_back()
                && stage.refresh().is_some()
                && !stage.version.rolled_back()
            {
                // Its outputs are dropped: the restored version processes the batch instead,
                // so each record's outputs come from exactly one version.
                continue;
            }
            break result;
        };
        let plugin = &stage.version.plugin;
        let who = Some((plugin.name.clone(), plugin.compiled.sha256.clone()));
        let stage = &mut stage.instance;
        let mut stage_failures: Vec<Failure> = result
            .failures
            .into_iter()
            .map(|(i, message)| Failure {
                position: records[i].position().to_owned(),
                message,
                plugin: who.clone(),
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
                plugin: who.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn large_batches_are_cut_by_bytes_and_acked_once_at_the_end() {
        let acks = Arc::new(AtomicUsize::new(0));
        let counted = acks.clone();
        let sizes = [300, 300, 500, 2000, 100, 100, 100];
        let batch = SourceBatch {
            records: sizes.iter().map(|&n| Record::new(vec![b'x'; n])).collect(),
            error: Some(crate::connector::RecordError {
                position: "line 8".into(),
                message: "bad".into(),
            }),
            lane: 3,
            ack: Some(Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            })),
        };
        let pieces = split_at_bytes(batch, 1000);
        let lens: Vec<Vec<usize>> = pieces
            .iter()
            .map(|p| p.records.iter().map(|r| r.value.len()).collect())
            .collect();
        // In order; a record larger than the cap goes alone.
        assert_eq!(
            lens,
            [vec![300, 300], vec![500], vec![2000], vec![100, 100, 100]]
        );
        assert!(pieces.iter().all(|p| p.lane == 3));
        let (last, rest) = pieces.split_last().unwrap();
        assert!(rest.iter().all(|p| p.ack.is_none() && p.error.is_none()));
        assert_eq!(
            last.error.as_ref().map(|e| e.position.as_str()),
            Some("line 8")
        );
        let mut pieces = pieces;
        (pieces.pop().unwrap().ack.unwrap())();
        assert_eq!(acks.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn small_batches_are_left_whole() {
        let batch = SourceBatch {
            records: vec![Record::new(vec![0u8; 10]); 100],
            ..Default::default()
        };
        let pieces = split_at_bytes(batch, 1000);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].records.len(), 100);
    }
}
