//! The listing source: new objects under a prefix, in key order, their rows as records (one
//! lane per object), progress acknowledged row by row and saved every second. With
//! `list=events` it publishes an object-created event per object instead of its rows.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use opendal::Operator;

use opendal::raw::Timestamp;

use super::events;
use super::progress::{ProgressStore, Tracker, SAVE_EVERY};
use super::rows::OpenObject;
use super::ObjectUri;
use crate::connector::{BoxFuture, Source, SourceBatch};
use crate::context::Context;
use crate::health::{Cause, Health};
use crate::record::{Origin, Record};
use crate::sync::Locked;

/// An object being read, and its lane.
struct Current {
    object: OpenObject,
    lane: u32,
}

pub struct ObjectSource {
    uri: ObjectUri,
    health: Arc<Health>,
    op: Operator,
    tracker: Arc<Tracker>,
    queue: VecDeque<Listed>,
    seen: HashSet<String>,
    current: Option<Current>,
    lanes: u32,
    last_list: Option<Instant>,
    saver: tokio::task::JoinHandle<()>,
    /// Objects opened and rows handed out, for the progress line of long backfills.
    opened: u64,
    rows: u64,
    last_progress: Instant,
}

/// An object found by listing, not done yet.
struct Listed {
    key: String,
    /// For `list=events`: what the event says about it.
    size: u64,
    etag: Option<String>,
    modified: Option<String>,
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

    /// Lists the prefix and queues objects not done yet (see [`ObjectUri::wants`]), in key
    /// order.
    async fn list(&mut self) -> Result<()> {
        let entries = self
            .op
            .list_with(&self.uri.list_root())
            .recursive(true)
            .await
            .map_err(|e| self.uri.explain(e, "list"))?;
        self.health
            .recovered(&self.uri.display, &[Cause::Unreachable]);
        let done = &self.tracker.progress.locked().done;
        let mut new: Vec<Listed> = entries
            .into_iter()
            .filter(|e| e.metadata().mode().is_file())
            .map(|e| {
                let meta = e.metadata();
                Listed {
                    key: e.path().trim_start_matches('/').to_owned(),
                    size: meta.content_length(),
                    etag: meta.etag().map(|t| t.trim_matches('"').to_owned()),
                    modified: meta.last_modified().map(|t| t.to_string()),
                }
            })
            .filter(|o| {
                self.uri.wants(&o.key) && !done.contains(&o.key) && !self.seen.contains(&o.key)
            })
            .collect();
        new.sort_by(|a, b| a.key.cmp(&b.key));
        if !new.is_empty() {
            tracing::info!(uri = %self.uri.display, new = new.len(), "new objects");
        }
        for o in new {
            self.seen.insert(o.key.clone());
            self.queue.push_back(o);
        }
        Ok(())
    }

    /// `list=events`: up to `max` queued objects as object-created events, keyed
    /// `bucket/key` (so repeated events of one object stay in order in one partition), all
    /// marked done once the events are durable.
    fn events(&mut self, max: usize) -> SourceBatch {
        let bucket = self.uri.bucket().unwrap_or_default().to_owned();
        let n = self.queue.len().min(max);
        let mut keys = Vec::with_capacity(n);
        let records = self
            .queue
            .drain(..n)
            .map(|o| {
                let created = events::Created {
                    bucket: bucket.clone(),
                    key: o.key,
                    size: Some(o.size),
                    etag: o.etag,
                };
                let time = o.modified.unwrap_or_else(|| Timestamp::now().to_string());
                let (key, value) = events::created(&created, self.uri.region(), &time);
                let origin = Origin::At(Arc::from(created.key.as_str()), '#', 0);
                keys.push(created.key);
                Record {
                    key: Some(Bytes::from(key)),
                    value: Bytes::from(value),
                    origin: Some(origin),
                    ..Default::default()
                }
            })
            .collect();
        self.opened += n as u64;
        let tracker = self.tracker.clone();
        SourceBatch {
            records,
            error: None,
            lane: 0,
            ack: Some(Box::new(move || {
                for key in keys {
                    tracker.acked(&key, 1, true);
                }
            })),
            restart: false,
            ends_lane: false,
        }
    }

    async fn open_object(&mut self, key: String) -> Result<Current> {
        let skip = self
            .tracker
            .progress
            .locked()
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
        Ok(Current {
            object: OpenObject::new(&key, data, self.uri.format, skip),
            lane,
        })
    }
}

impl Source for ObjectSource {
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(async move {
            loop {
                if let Some(Current { object, lane }) = &mut self.current {
                    let taken = object.take(max, &self.uri.display);
                    self.rows += taken.records.len() as u64;
                    let (key, lane) = (object.key.clone(), *lane);
                    if taken.finished {
                        self.current = None;
                    }
                    let tracker = self.tracker.clone();
                    let (rows_done, finished) = (taken.rows_done, taken.finished);
                    return Ok(Some(SourceBatch {
                        records: taken.records,
                        error: taken.error,
                        lane,
                        ack: Some(Box::new(move || tracker.acked(&key, rows_done, finished))),
                        restart: false,
                        ends_lane: finished,
                    }));
                }
                if self.uri.list_events && !self.queue.is_empty() {
                    return Ok(Some(self.events(max)));
                }
                if let Some(listed) = self.queue.pop_front() {
                    self.current = Some(self.open_object(listed.key).await?);
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
