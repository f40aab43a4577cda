//! The object sink: records rolled into whole objects (by count, size and age), each named
//! after the source position of its first record, so a replay overwrites instead of duplicating.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use arrow_array::RecordBatch;
use opendal::Operator;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::{Format, ObjectUri};
use crate::connector::{before_input_of, BoxFuture, Refusals, Rejected, Sink, Written};
use crate::context::Context;
use crate::format::{jsonl, parquet as pq};
use crate::health::{Cause, Health};
use crate::record::Record;
use crate::sync::Locked;

/// The object name for records starting at `position`: key-safe characters only, and digit runs
/// padded so names sort like positions.
fn object_name(position: &str) -> String {
    let mut out = String::with_capacity(position.len() + 16);
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            out.push_str(&format!("{:0>12}", digits));
            digits.clear();
        }
    };
    for c in position.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        flush(&mut digits, &mut out);
        out.push(if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '-'
        });
    }
    flush(&mut digits, &mut out);
    out.trim_matches('-').to_owned()
}

/// Objects being uploaded at once per worker; more waits (backpressure).
const UPLOADS_PER_WORKER: usize = 2;
/// Objects larger than this are uploaded in parts (multipart upload on S3).
const MULTIPART_ABOVE: usize = 16 << 20;
const PART_SIZE: usize = 8 << 20;

pub struct ObjectSink {
    shared: Arc<SinkShared>,
    pending: Arc<tokio::sync::Mutex<Pending>>,
    /// Dropped with the sink: tells its roller to write what is pending and stop.
    _open: mpsc::Sender<()>,
}

struct SinkShared {
    uri: ObjectUri,
    op: Operator,
    /// One column layout for every object this sink writes (inferred from the first records).
    columns: Mutex<pq::ColumnEncoder>,
    uploads: Semaphore,
    /// Turns true when the run stops: objects are written at once instead of at their roll
    /// time, so pipelines waiting on them (through in-process topics) finish quickly.
    stopping: watch::Receiver<bool>,
    health: Arc<Health>,
    metrics: Arc<crate::context::EndpointMetrics>,
}

#[derive(Default)]
struct Pending {
    first_position: Option<String>,
    jsonl: Vec<u8>,
    batches: Vec<RecordBatch>,
    records: usize,
    bytes: usize,
    opened: Option<Instant>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

impl ObjectSink {
    pub async fn open(uri: &ObjectUri, ctx: &Context) -> Result<Self> {
        if uri.events.is_some() || uri.list_events {
            anyhow::bail!(
                "{}: events= and list=events are for sources: a sink writes objects \
                 (to publish their events, run a list=events source into Kafka)",
                uri.display
            );
        }
        let columns = match &uri.schema {
            None => pq::ColumnEncoder::default(),
            Some(path) => {
                let examples = std::fs::read(path).with_context(|| {
                    format!(
                        "{}: cannot read the schema examples {}",
                        uri.display,
                        path.display()
                    )
                })?;
                pq::ColumnEncoder::from_examples(&examples)
                    .map_err(|e| anyhow!("{}: schema {}: {e}", uri.display, path.display()))?
            }
        };
        let op = uri.open(ctx).await?;
        let shared = Arc::new(SinkShared {
            uri: uri.clone(),
            op,
            columns: Mutex::new(columns),
            uploads: Semaphore::new(UPLOADS_PER_WORKER),
            stopping: ctx.stopping(),
            health: ctx.health.clone(),
            metrics: ctx.endpoints.clone(),
        });
        Ok(Self::with(shared))
    }

    fn with(shared: Arc<SinkShared>) -> Self {
        let pending = Arc::new(tokio::sync::Mutex::new(Pending::default()));
        let (open, mut closed) = mpsc::channel::<()>(1);
        let (roller_shared, roller_pending) = (shared.clone(), pending.clone());
        // Rolls objects by age even when no records arrive, and writes the last one when the
        // sink is dropped.
        tokio::spawn(async move {
            let tick = (roller_shared.uri.roll_after / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(1));
            let mut stopping = roller_shared.stopping.clone();
            loop {
                tokio::select! {
                    _ = closed.recv() => break,
                    _ = tokio::time::sleep(tick) => {}
                    // Wakes the roller once at the stop; after that the flag is read below.
                    Ok(()) = stopping.changed() => {}
                }
                let mut p = roller_pending.lock().await;
                let stop = *stopping.borrow();
                let due = |t: Instant| stop || t.elapsed() >= roller_shared.uri.roll_after;
                if p.opened.is_some_and(due) {
                    let full = std::mem::take(&mut *p);
                    drop(p);
                    upload(roller_shared.clone(), full).await;
                }
            }
            let last = std::mem::take(&mut *roller_pending.lock().await);
            upload(roller_shared, last).await;
        });
        ObjectSink {
            shared,
            pending,
            _open: open,
        }
    }
}

/// Writes one object whole and tells every batch in it how that went. Runs on its own task so
/// the worker goes on; at most UPLOADS_PER_WORKER at once.
async fn upload(shared: Arc<SinkShared>, p: Pending) {
    if p.records == 0 {
        for w in p.waiters {
            let _ = w.send(Ok(()));
        }
        return;
    }
    let Ok(permit) = shared.uploads.acquire().await else {
        return;
    };
    let name = object_name(p.first_position.as_deref().unwrap_or("records"));
    let key = format!(
        "{}{name}.{}",
        shared.uri.prefix,
        shared.uri.format.extension()
    );
    let result = async {
        let body = match shared.uri.format {
            Format::Jsonl => p.jsonl,
            Format::Parquet => {
                let schema = shared
                    .columns
                    .locked()
                    .schema()
                    .cloned()
                    .ok_or("no columns")?;
                let batches = p.batches;
                tokio::task::spawn_blocking(move || pq::write_file(&schema, &batches))
                    .await
                    .map_err(|e| e.to_string())??
            }
        };
        let size = body.len();
        let written = if size > MULTIPART_ABOVE {
            async {
                let mut w = shared.op.writer_with(&key).chunk(PART_SIZE).concurrent(2).await?;
                w.write(body).await?;
                w.close().await.map(drop)
            }
            .await
        } else {
            shared.op.write(&key, body).await.map(drop)
        };
        written.map_err(|e| shared.uri.explain(e, &format!("write {key}")).to_string())?;
        tracing::info!(uri = %shared.uri.display, key, records = p.records, bytes = size, "object written");
        shared
            .metrics
            .count_object_written(&shared.uri.display, p.records as u64, size as u64);
        shared
            .health
            .recovered(&shared.uri.display, &[Cause::Unreachable]);
        Ok::<_, String>(())
    }
    .await;
    drop(permit);
    if let Err(e) = &result {
        tracing::error!("{e}");
    }
    for w in p.waiters {
        let _ = w.send(result.clone());
    }
}

impl Sink for ObjectSink {
    fn write<'a>(
        &'a mut self,
        records: &'a [Record],
        refusals: Refusals,
    ) -> BoxFuture<'a, Result<Written>> {
        Box::pin(async move {
            let mut rejected = Vec::new();
            let mut added = 0usize;
            let mut p = self.pending.lock().await;
            let first_kept;
            let stop = refusals == Refusals::StopAtInput;
            match self.shared.uri.format {
                Format::Jsonl => {
                    let before = p.jsonl.len();
                    let mut first = None;
                    // Where each record's line starts, to cut before a refused record's input.
                    let mut starts = Vec::new();
                    for (i, r) in records.iter().enumerate() {
                        if stop {
                            starts.push(p.jsonl.len());
                        }
                        match jsonl::write_line(&r.value, &mut p.jsonl) {
                            Ok(()) => {
                                first.get_or_insert(i);
                                added += 1;
                            }
                            Err(message) => {
                                rejected.push(Rejected { index: i, message });
                                if stop {
                                    let cut = before_input_of(records, i);
                                    p.jsonl.truncate(starts[cut]);
                                    added = cut;
                                    first = first.filter(|&f| f < cut);
                                    break;
                                }
                            }
                        }
                    }
                    p.bytes += p.jsonl.len() - before;
                    first_kept = first;
                }
                Format::Parquet => {
                    let values: Vec<&[u8]> = records.iter().map(|r| &r.value[..]).collect();
                    // Once the columns are known they never change: decode outside the lock,
                    // so workers decode side by side.
                    let known = {
                        let columns = self.shared.columns.locked();
                        columns.schema().is_some().then(|| columns.clone())
                    };
                    let (mut batch, mut misfits) = match known {
                        Some(mut columns) => columns.encode(&values),
                        None => self.shared.columns.locked().encode(&values),
                    };
                    if let (true, Some(&(first, _))) = (stop, misfits.first()) {
                        // Rows are the records that fit, in order: the first `cut` of them.
                        let cut = before_input_of(records, first);
                        batch = batch.map(|b| b.slice(0, cut)).filter(|b| b.num_rows() > 0);
                        misfits.truncate(1);
                    }
                    let mut fits = vec![true; records.len()];
                    misfits.iter().for_each(|m| fits[m.0] = false);
                    first_kept = fits.iter().position(|&f| f);
                    rejected.extend(
                        misfits
                            .into_iter()
                            .map(|(index, message)| Rejected { index, message }),
                    );
                    if let Some(batch) = batch {
                        added = batch.num_rows();
                        p.bytes += batch.get_array_memory_size();
                        p.batches.push(batch);
                    }
                }
            }
            if added == 0 {
                return Ok(Written::done(rejected));
            }
            if p.first_position.is_none() {
                p.first_position = first_kept.map(|i| records[i].position());
                p.opened = Some(Instant::now());
            }
            p.records += added;
            let (tx, rx) = oneshot::channel();
            p.waiters.push(tx);
            let uri = &self.shared.uri;
            if p.records >= uri.roll_records || p.bytes >= uri.roll_bytes {
                let full = std::mem::take(&mut *p);
                drop(p);
                // Wait for an upload slot here, so a slow store slows the pipeline down.
                let permit = self.shared.uploads.acquire().await?;
                drop(permit);
                tokio::spawn(upload(self.shared.clone(), full));
            }
            let display = uri.display.clone();
            Ok(Written {
                rejected,
                durable: Box::pin(async move {
                    match rx.await {
                        Ok(result) => result.map_err(|e| anyhow!(e)),
                        Err(_) => Err(anyhow!("{display}: the object writer stopped")),
                    }
                }),
            })
        })
    }

    fn fork(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(Self::with(self.shared.clone())))
    }

    /// Beside the data: `PREFIX/_sluice/state/` (sources pass `_` folders over).
    fn checkpoint_blobs<'a>(
        &'a mut self,
        _ctx: &'a crate::context::Context,
    ) -> BoxFuture<'a, Result<Option<std::sync::Arc<dyn crate::connector::blobs::Blobs>>>> {
        let uri = &self.shared.uri;
        let blobs = crate::connector::blobs::in_store(
            self.shared.op.clone(),
            format!("{}_sluice/state/", uri.prefix),
            uri.display.clone(),
        );
        Box::pin(async move { Ok(Some(blobs)) })
    }

    fn max_unacked_batches(&self) -> usize {
        // Acks wait for a whole object: let enough batches wait to fill one.
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_positions() {
        assert_eq!(
            object_name("user_sessions/3@1200"),
            "user_sessions-000000000003-000000001200"
        );
        assert_eq!(
            object_name("mock.wasm@1795617320123#9"),
            "mock-wasm-1795617320123-000000000009"
        );
        assert!(object_name("t/0@9") < object_name("t/0@10"));
    }
}
