//! In-process topics, `mem://NAME`, to chain pipelines inside one process.
//!
//! Bounded (a slow reader slows its writers down) and acknowledged end to end: a batch written
//! to a topic is durable for its writer only once the reading pipeline has acknowledged it, i.e.
//! once it is durable in that pipeline's sink. So a chain of pipelines keeps at-least-once: a
//! crash anywhere re-reads from the first pipeline's source positions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use tokio::sync::{mpsc, oneshot};

use super::{BoxFuture, Refusals, Sink, Source, SourceBatch, Written};
use crate::context::Context;
use crate::record::Record;
use crate::sync::Locked;

/// Batches a topic holds before its writers wait.
const CAPACITY: usize = 16;

struct Delivery {
    records: Vec<Record>,
    lane: u32,
    done: oneshot::Sender<()>,
}

#[derive(Default)]
struct Topic {
    tx: Option<mpsc::Sender<Delivery>>,
    rx: Option<mpsc::Receiver<Delivery>>,
    writers: usize,
    readers: usize,
}

/// One run's in-process topics, by name (kept in its [`Context`]).
#[derive(Default)]
pub struct Topics(Mutex<HashMap<String, Topic>>);

impl Topics {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        self.0.locked()
    }
}

fn topic_name(uri: &str) -> Result<String> {
    let name = uri.strip_prefix("mem://").unwrap_or(uri);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("`{uri}` is not an in-process topic: use mem://NAME with letters, digits, -, _ or .");
    }
    Ok(name.to_owned())
}

fn with_topic<T>(ctx: &Context, name: &str, f: impl FnOnce(&mut Topic) -> T) -> Result<T> {
    let topics = ctx.shared::<Topics>();
    let mut topics = topics.lock();
    let topic = topics.entry(name.to_owned()).or_insert_with(|| {
        let (tx, rx) = mpsc::channel(CAPACITY);
        Topic {
            tx: Some(tx),
            rx: Some(rx),
            ..Default::default()
        }
    });
    Ok(f(topic))
}

/// Call once every pipeline of the process has opened its endpoints: checks that each topic
/// has both a writer and a reader, and lets a topic end when its last writer is done.
pub fn seal(ctx: &Context) -> Result<()> {
    let topics = ctx.shared::<Topics>();
    let mut topics = topics.lock();
    for (name, topic) in topics.drain() {
        match (topic.writers, topic.readers) {
            (0, _) => bail!("mem://{name} is read but no pipeline writes to it: add a pipeline with sink mem://{name}, or fix the name"),
            (_, 0) => bail!("mem://{name} is written but no pipeline reads it (its writers would stop when it fills up): add a pipeline with source mem://{name}, or fix the name"),
            _ => {}
        }
    }
    Ok(())
}

pub struct MemSink {
    name: Arc<str>,
    tx: mpsc::Sender<Delivery>,
    lane: u32,
    lanes: Arc<AtomicU32>,
}

impl MemSink {
    pub fn open(uri: &str, ctx: &Context) -> Result<Self> {
        let name = topic_name(uri)?;
        let tx = with_topic(ctx, &name, |t| {
            t.writers += 1;
            t.tx.clone()
        })?
        .ok_or_else(|| anyhow!("mem://{name} is closed"))?;
        Ok(MemSink {
            name: name.into(),
            tx,
            lane: 0,
            lanes: Arc::new(AtomicU32::new(1)),
        })
    }
}

impl Sink for MemSink {
    fn write<'a>(
        &'a mut self,
        records: &'a [Record],
        _refusals: Refusals,
    ) -> BoxFuture<'a, Result<Written>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(Written::done(Vec::new()));
            }
            let (done, acked) = oneshot::channel();
            let delivery = Delivery {
                records: records.to_vec(),
                lane: self.lane,
                done,
            };
            let name = self.name.clone();
            let stopped = move || {
                anyhow!("mem://{name}: the pipeline reading it stopped before acknowledging these records")
            };
            self.tx.send(delivery).await.map_err(|_| stopped())?;
            Ok(Written {
                rejected: Vec::new(),
                durable: Box::pin(async move { acked.await.map_err(|_| stopped()) }),
            })
        })
    }

    fn fork(&self) -> Result<Box<dyn Sink>> {
        // Each writing worker is a lane of its own, so its order is kept downstream.
        Ok(Box::new(MemSink {
            name: self.name.clone(),
            tx: self.tx.clone(),
            lane: self.lanes.fetch_add(1, Ordering::Relaxed),
            lanes: self.lanes.clone(),
        }))
    }
}

pub struct MemSource {
    rx: mpsc::Receiver<Delivery>,
    /// The rest of a delivery larger than the batch size.
    rest: Option<(Vec<Record>, u32, Arc<Parts>)>,
}

/// Acknowledges a delivery once every part it was split into is acknowledged.
struct Parts {
    left: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl Parts {
    fn ack(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(done) = self.done.locked().take() {
                let _ = done.send(());
            }
        }
    }
}

impl MemSource {
    pub fn open(uri: &str, ctx: &Context) -> Result<Self> {
        let name = topic_name(uri)?;
        let rx = with_topic(ctx, &name, |t| {
            t.readers += 1;
            t.rx.take()
        })?
        .ok_or_else(|| {
            anyhow!("mem://{name} already has a reader: an in-process topic feeds one pipeline")
        })?;
        Ok(MemSource { rx, rest: None })
    }
}

impl Source for MemSource {
    fn fed_in_process(&self) -> bool {
        true
    }

    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(async move {
            let (mut records, lane, parts) = match self.rest.take() {
                Some(rest) => rest,
                None => {
                    let Some(d) = self.rx.recv().await else {
                        return Ok(None); // every writer is done
                    };
                    let n = d.records.len().div_ceil(max.max(1)).max(1);
                    let parts = Arc::new(Parts {
                        left: AtomicUsize::new(n),
                        done: Mutex::new(Some(d.done)),
                    });
                    (d.records, d.lane, parts)
                }
            };
            if records.len() > max {
                let rest = records.split_off(max);
                self.rest = Some((rest, lane, parts.clone()));
            }
            Ok(Some(SourceBatch {
                records,
                error: None,
                lane,
                ack: Some(Box::new(move || parts.ack())),
                restart: false,
                ends_lane: false,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acknowledged_end_to_end_and_split() {
        let ctx = Context::default();
        let mut sink = MemSink::open("mem://t1", &ctx).unwrap();
        let mut source = MemSource::open("mem://t1", &ctx).unwrap();
        seal(&ctx).unwrap();
        let records: Vec<Record> = (0..5).map(|i| Record::new(format!("{i}"))).collect();
        let written = sink.write(&records, Refusals::WriteTheRest).await.unwrap();
        let a = source.next_batch(3).await.unwrap().unwrap();
        let b = source.next_batch(3).await.unwrap().unwrap();
        assert_eq!((a.records.len(), b.records.len()), (3, 2));
        (a.ack.unwrap())();
        let mut durable = written.durable;
        assert!(
            futures_poll_once(&mut durable).is_none(),
            "durable before every part is acked"
        );
        (b.ack.unwrap())();
        durable.await.unwrap();
        drop(sink);
        assert!(source.next_batch(3).await.unwrap().is_none());
    }

    fn futures_poll_once<T>(f: &mut BoxFuture<'static, T>) -> Option<T> {
        let waker = std::task::Waker::noop();
        match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn unpaired_topics_and_second_readers_are_refused() {
        let ctx = Context::default();
        let _w = MemSink::open("mem://only-written", &ctx).unwrap();
        let e = seal(&ctx).unwrap_err().to_string();
        assert!(
            e.contains("mem://only-written is written but no pipeline reads it"),
            "{e}"
        );
        let _r = MemSource::open("mem://t2", &ctx).unwrap();
        let e = MemSource::open("mem://t2", &ctx).err().unwrap().to_string();
        assert!(e.contains("already has a reader"), "{e}");
        assert!(MemSink::open("mem://bad name", &ctx).is_err());
    }

    #[test]
    fn two_runs_share_no_topics() {
        let (a, b) = (Context::default(), Context::default());
        let _r = MemSource::open("mem://same", &a).unwrap();
        let _w = MemSink::open("mem://same", &a).unwrap();
        // The other run's reader of the same name is its own topic, so it has no writer.
        let _other = MemSource::open("mem://same", &b).unwrap();
        seal(&a).unwrap();
        let e = seal(&b).unwrap_err().to_string();
        assert!(
            e.contains("mem://same is read but no pipeline writes to it"),
            "{e}"
        );
    }
}
