//! The listing source: new objects under a prefix, in key order, their rows as records (one
//! lane per object), progress acknowledged row by row and saved every second.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use opendal::Operator;

use super::progress::{ProgressStore, Tracker, SAVE_EVERY};
use super::{Format, ObjectUri};
use crate::connector::{BoxFuture, RecordError, Source, SourceBatch};
use crate::context::Context;
use crate::format::{jsonl, parquet as pq};
use crate::health::{Cause, Health};
use crate::record::{Origin, Record};

enum Rows {
    Parquet(pq::ParquetRows),
    Jsonl { data: Bytes, at: usize, line: u64 },
}

struct OpenObject {
    key: Arc<str>,
    /// The same key as record keys: one buffer shared by every row.
    key_bytes: Bytes,
    lane: u32,
    rows: Option<Rows>,
    /// Rows (records and bad rows) handed out so far.
    next_row: u64,
    ahead: VecDeque<Bytes>,
    /// Decoded but not yet handed out error, ending the rows before it.
    error: Option<(u64, String)>,
}

pub struct ObjectSource {
    uri: ObjectUri,
    health: Arc<Health>,
    op: Operator,
    tracker: Arc<Tracker>,
    queue: VecDeque<String>,
    seen: HashSet<String>,
    current: Option<OpenObject>,
    lanes: u32,
    last_list: Option<Instant>,
    saver: tokio::task::JoinHandle<()>,
    /// Objects opened and rows handed out, for the progress line of long backfills.
    opened: u64,
    rows: u64,
    last_progress: Instant,
}

/// How often (at most; and every 100 objects) a source with a backlog says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl ObjectSource {
    pub async fn open(uri: &ObjectUri, state: Option<PathBuf>, ctx: &Context) -> Result<Self> {
        let op = uri.open(ctx).await?;
        let store = match state {
            Some(path) => ProgressStore::File(path),
            None => ProgressStore::Object {
                op: op.clone(),
                key: format!("{}_sluice/{}.progress.json", uri.prefix, uri.group),
            },
        };
        let progress = store.load().await.with_context(|| uri.display.clone())?;
        tracing::info!(uri = %uri.display, progress = %store, done = progress.done.len(), partial = progress.partial.len(), "object source ready");
        let tracker = Arc::new(Tracker {
            progress: Mutex::new(progress),
            dirty: false.into(),
            store,
        });
        let saver_tracker = tracker.clone();
        let saver = tokio::spawn(async move {
            loop {
                tokio::time::sleep(SAVE_EVERY).await;
                if let Err(e) = saver_tracker.save_if_dirty().await {
                    tracing::warn!("{e:#}; will retry");
                }
            }
        });
        Ok(ObjectSource {
            uri: uri.clone(),
            health: ctx.health.clone(),
            op,
            tracker,
            queue: VecDeque::new(),
            seen: HashSet::new(),
            current: None,
            lanes: 0,
            last_list: None,
            saver,
            opened: 0,
            rows: 0,
            last_progress: Instant::now(),
        })
    }

    /// Lists the prefix and queues objects not done yet, in key order. Keys under a folder (or
    /// with a name) starting with `_` or `.` are bookkeeping (ours, Spark's `_SUCCESS`...).
    async fn list(&mut self) -> Result<()> {
        let entries = self
            .op
            .list_with(&self.uri.list_root())
            .recursive(true)
            .await
            .map_err(|e| self.uri.explain(e, "list"))?;
        self.health
            .recovered(&self.uri.display, &[Cause::Unreachable]);
        let done = &self
            .tracker
            .progress
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .done;
        let mut new: Vec<String> = entries
            .into_iter()
            .filter(|e| e.metadata().mode().is_file())
            .map(|e| e.path().trim_start_matches('/').to_owned())
            .filter(|k| {
                let rel = k.strip_prefix(&self.uri.prefix).unwrap_or(k);
                !rel.split('/')
                    .any(|part| part.starts_with('_') || part.starts_with('.'))
                    && self.uri.format.reads(k)
                    && !done.contains(k)
                    && !self.seen.contains(k)
            })
            .collect();
        new.sort();
        if !new.is_empty() {
            tracing::info!(uri = %self.uri.display, new = new.len(), "new objects");
        }
        for k in new {
            self.seen.insert(k.clone());
            self.queue.push_back(k);
        }
        Ok(())
    }

    async fn open_object(&mut self, key: String) -> Result<OpenObject> {
        let skip = self
            .tracker
            .progress
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .partial
            .get(&key)
            .copied()
            .unwrap_or(0);
        let lane = self.lanes;
        self.lanes = self.lanes.wrapping_add(1);
        let data = self
            .op
            .read(&key)
            .await
            .map_err(|e| self.uri.explain(e, &format!("read {key}")))?
            .to_bytes();
        let mut object = OpenObject {
            key: Arc::from(key.as_str()),
            key_bytes: Bytes::from(key.clone()),
            lane,
            rows: None,
            next_row: 0,
            ahead: VecDeque::new(),
            error: None,
        };
        match self.uri.format {
            Format::Parquet => match pq::ParquetRows::open(data) {
                Ok(rows) => object.rows = Some(Rows::Parquet(rows)),
                Err(e) => object.error = Some((0, e)),
            },
            Format::Jsonl => {
                object.rows = Some(Rows::Jsonl {
                    data,
                    at: 0,
                    line: 0,
                })
            }
        }
        if skip > 0 {
            tracing::info!(key, rows = skip, "resuming a half-done object");
            while object.next_row < skip {
                object.fill(1);
                if object.ahead.pop_front().is_none() && object.error.take().is_none() {
                    break;
                }
                object.next_row += 1;
            }
        }
        Ok(object)
    }
}

impl OpenObject {
    /// Decodes until `want` rows are ahead, an error is found or the object ends.
    fn fill(&mut self, want: usize) {
        while self.ahead.len() < want && self.error.is_none() {
            let row = self.next_row + self.ahead.len() as u64;
            match &mut self.rows {
                None => return,
                Some(Rows::Parquet(rows)) => match rows.next_rows() {
                    Some(Ok(batch)) => self.ahead.extend(batch),
                    Some(Err(e)) => {
                        self.error = Some((row, e));
                        self.rows = None;
                    }
                    None => self.rows = None,
                },
                Some(Rows::Jsonl { data, at, line }) => {
                    if *at >= data.len() {
                        self.rows = None;
                        return;
                    }
                    let end = memchr::memchr(b'\n', &data[*at..]).map_or(data.len(), |n| *at + n);
                    let text = data.slice(*at..end);
                    *at = end + 1;
                    *line += 1;
                    let trimmed = text.trim_ascii();
                    if trimmed.is_empty() {
                        continue;
                    }
                    match jsonl::validate(trimmed) {
                        Ok(()) => self.ahead.push_back(text),
                        Err(e) => self.error = Some((row, format!("line {line}: {e}"))),
                    }
                }
            }
        }
    }

    fn finished(&self) -> bool {
        self.rows.is_none() && self.ahead.is_empty() && self.error.is_none()
    }
}

impl Source for ObjectSource {
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(async move {
            loop {
                if let Some(object) = &mut self.current {
                    object.fill(max);
                    let n = object.ahead.len().min(max);
                    let first = object.next_row;
                    let records: Vec<Record> = object
                        .ahead
                        .drain(..n)
                        .enumerate()
                        .map(|(i, value)| Record {
                            key: Some(object.key_bytes.clone()),
                            value,
                            origin: Some(Origin::At(object.key.clone(), '#', first + i as u64)),
                            ..Default::default()
                        })
                        .collect();
                    object.next_row += n as u64;
                    self.rows += n as u64;
                    // An error is handed out once the rows before it are.
                    let error = if object.ahead.is_empty() {
                        object.error.take().map(|(row, message)| {
                            object.next_row += 1;
                            RecordError {
                                position: format!("{}#{row}", object.key),
                                message: format!("{}: {message}", self.uri.display),
                            }
                        })
                    } else {
                        None
                    };
                    if error.is_none() {
                        object.fill(1); // to know whether this batch is the object's last
                    }
                    let finished = object.finished();
                    let (key, rows_done, lane) = (object.key.clone(), object.next_row, object.lane);
                    if finished {
                        self.current = None;
                    }
                    let tracker = self.tracker.clone();
                    return Ok(Some(SourceBatch {
                        records,
                        error,
                        lane,
                        ack: Some(Box::new(move || tracker.acked(&key, rows_done, finished))),
                    }));
                }
                if let Some(key) = self.queue.pop_front() {
                    self.current = Some(self.open_object(key).await?);
                    self.opened += 1;
                    if self.last_progress.elapsed() >= PROGRESS_EVERY
                        || self.opened.is_multiple_of(100)
                    {
                        self.last_progress = Instant::now();
                        tracing::info!(uri = %self.uri.display, objects_read = self.opened, objects_left = self.queue.len(), rows_read = self.rows, "progress");
                    }
                    continue;
                }
                if let Some(t) = self.last_list {
                    if !self.uri.follow {
                        return Ok(None);
                    }
                    let wait = self.uri.poll.saturating_sub(t.elapsed());
                    tokio::time::sleep(wait).await;
                }
                self.last_list = Some(Instant::now());
                self.list().await?;
            }
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.saver.abort();
            self.tracker.save_if_dirty().await
        })
    }
}
