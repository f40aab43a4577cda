//! Cutting what the source hands over for the workers, and saying how it goes: batches cut
//! at a byte size so large records stay within a plugin's memory cap, and progress logged
//! while records flow.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio_util::task::AbortOnDropHandle;

use crate::connector::SourceBatch;
use crate::metrics::PipelineMetrics;
use crate::record::Record;

/// A batch's records are cut into plugin calls of at most this many bytes (keys and values), so
/// large records stay within the plugin's memory cap at any batch size.
pub(super) const MAX_BATCH_BYTES: usize = 4 << 20;

/// Cuts `batch` into pieces of at most `max_bytes` (at least one record each) for the same
/// worker. Only the last piece carries the ack and the source error: a worker acks in order, so
/// the source position moves once every piece is durable.
pub(super) fn split_at_bytes(mut batch: SourceBatch, max_bytes: usize) -> Vec<SourceBatch> {
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
            lane: batch.lane,
            ..Default::default()
        });
    }
    pieces[0].restart = batch.restart;
    let last = pieces.last_mut().expect("the batch had records");
    last.ack = batch.ack.take();
    last.error = batch.error.take();
    last.ends_lane = batch.ends_lane;
    pieces
}

/// Logs the pipeline's counters and rate every `every` while they move, until dropped.
pub(super) fn log_progress(
    metrics: &Arc<PipelineMetrics>,
    every: std::time::Duration,
) -> AbortOnDropHandle<()> {
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
    AbortOnDropHandle::new(tokio::spawn(tracing::Instrument::instrument(
        task,
        tracing::Span::current(),
    )))
}
