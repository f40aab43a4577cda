//! The consumer-group source: a thread reads the partitions in bursts and hands over batches
//! of one partition each; a batch's ack stores its last offset, committed every second, on
//! revoke and at shutdown.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use bytes::BytesMut;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::mpsc;

use super::lanes::Lanes;
use super::queue::{raw_message, to_record, FetchQueue};
use super::{await_topic, GroupConsumer, KafkaContext, KafkaUri, CONSUMER_DEFAULTS};
use crate::connector::keepers::Keepers;
use crate::connector::{BoxFuture, Source, SourceBatch, SourceOptions};
use crate::context::Context;
use crate::health::Cause;
use crate::record::Record;

/// Reads a topic as a member of a consumer group. A thread reads the topic's partition queues in
/// bursts (serving the consumer's events in between) and hands over what it read grouped by
/// partition; `next_batch` cuts that into batches of one partition each
/// (lane = partition), each acked by storing the offset after its last record.
pub struct KafkaSource {
    polled: mpsc::Receiver<Polled>,
    current: Option<Polled>,
    consumer: Arc<GroupConsumer>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
    uri: String,
    topic: Arc<str>,
    lanes: Arc<Lanes>,
}

/// How many batches' worth of records one poll burst may read.
const POLL_BATCHES: usize = 8;
/// How long a poll burst waits for more records after the first, in ms.
const POLL_LINGER_MS: i32 = 5;

/// A batch of one partition's records in offset order (at most the batch size), with their
/// offsets.
struct Polled {
    partition: i32,
    /// The partition's epoch when it was read (see [`Lanes`]).
    epoch: u64,
    records: Vec<Record>,
    offsets: Vec<i64>,
}

impl Polled {
    fn new(partition: i32, epoch: u64, capacity: usize) -> Self {
        Polled {
            partition,
            epoch,
            records: Vec::with_capacity(capacity),
            offsets: Vec::with_capacity(capacity),
        }
    }
}

impl KafkaSource {
    pub async fn open(uri: &KafkaUri, options: &SourceOptions, ctx: &Context) -> Result<Self> {
        Self::open_with(uri, options, ctx, false).await
    }

    /// With `drain_on_revoke`, giving up a partition waits (up to 30 s) until its batches in
    /// flight are acknowledged, so its next owner does not repeat them: for records that
    /// stand for a lot of work (object events).
    pub async fn open_with(
        uri: &KafkaUri,
        options: &SourceOptions,
        ctx: &Context,
        drain_on_revoke: bool,
    ) -> Result<Self> {
        let batch_size = options.batch_size;
        let keepers = ctx.shared::<Keepers>().of(&options.pipeline);
        let lanes = Arc::new(Lanes::new(keepers, drain_on_revoke));
        let group = uri.group.as_deref().ok_or_else(|| {
            anyhow!(
                "Kafka source {} needs a consumer group: add ?group=NAME",
                uri.uri
            )
        })?;
        let mut config = uri.config(CONSUMER_DEFAULTS);
        config.set("group.id", group);
        let consumer: BaseConsumer<KafkaContext> = config
            .create_with_context(KafkaContext::new(&uri.uri, ctx, lanes.clone()))
            .with_context(|| format!("cannot create a Kafka consumer for {}", uri.uri))?;
        let partitions = await_topic(consumer.client(), uri).await?;
        consumer
            .subscribe(&[&uri.topic])
            .with_context(|| format!("cannot subscribe to {}", uri.uri))?;
        tracing::info!(uri = %uri.uri, partitions, group, "consuming");
        ctx.health
            .waiting(&uri.uri, Some(&format!("joining consumer group `{group}`")));

        let consumer = Arc::new(GroupConsumer::new(consumer));
        let fetched = FetchQueue::split(&consumer, &uri.topic, partitions)?;
        let stop = Arc::new(AtomicBool::new(false));
        // Room for two bursts: the thread reads the next while the pipeline takes this one.
        let (tx, polled) = mpsc::channel(2 * POLL_BATCHES);
        let topic: Arc<str> = Arc::from(uri.topic.as_str());
        let poller = {
            let (consumer, stop, topic) = (consumer.clone(), stop.clone(), topic.clone());
            std::thread::Builder::new()
                .name("kafka-poll".into())
                // Read several batches' worth per burst: split by partition, they still fill
                // batches (larger batches amortise the plugin call and the hand-offs).
                .spawn(move || poll(&consumer, &fetched, &topic, batch_size, &stop, &tx))
                .context("starting the Kafka poll thread")?
        };
        Ok(KafkaSource {
            polled,
            current: None,
            consumer,
            stop,
            poller: Some(poller),
            uri: uri.uri.clone(),
            topic,
            lanes,
        })
    }

    async fn next(&mut self, max: usize) -> Result<Option<SourceBatch>> {
        let (mut polled, restart) = loop {
            if let Some(why) = self.lanes.failure() {
                anyhow::bail!("{}: {why}", self.uri);
            }
            let polled = match self.current.take() {
                Some(rest) => rest,
                None => match self.polled.recv().await {
                    Some(polled) => polled,
                    // The poll thread stops early only when the lanes failed.
                    None => match self.lanes.failure() {
                        Some(why) => anyhow::bail!("{}: {why}", self.uri),
                        None => return Ok(None),
                    },
                },
            };
            if let Some(first) = self.lanes.hand_out(polled.partition, polled.epoch) {
                break (polled, first);
            }
            // Read before its partition was revoked: the new owner reads it.
        };
        // Fewer records wanted (a `--count` ending): the rest is the next batch.
        if polled.records.len() > max {
            self.current = Some(Polled {
                partition: polled.partition,
                epoch: polled.epoch,
                records: polled.records.split_off(max),
                offsets: polled.offsets.split_off(max),
            });
        }
        let (consumer, topic, partition, lanes) = (
            self.consumer.clone(),
            self.topic.clone(),
            polled.partition,
            self.lanes.clone(),
        );
        let last = polled.offsets.last().copied();
        if last.is_none() {
            lanes.done(partition);
        }
        let ack = last.map(|last| -> crate::connector::Ack {
            Box::new(move || {
                // librdkafka's offset store takes the last processed offset and commits it + 1,
                // the next to read. Fails if the partition was revoked meanwhile; its new owner
                // re-reads from the last commit.
                if let Err(e) = consumer.store_offset(&topic, partition, last) {
                    tracing::debug!(partition, offset = last, "offset not stored: {e}");
                }
                lanes.done(partition);
            })
        });
        Ok(Some(SourceBatch {
            records: polled.records,
            error: None,
            lane: partition as u32,
            ack,
            restart,
            ends_lane: false,
        }))
    }
}

/// Polls until `stop`: reads what is there (up to `POLL_BATCHES` batches' worth), cuts it into
/// batches of one partition each (in arrival order, at most `batch_size` records) and sends
/// them on. Rebalances, commits and errors are served from the consumer queue between bursts.
fn poll(
    consumer: &BaseConsumer<KafkaContext>,
    fetched: &FetchQueue,
    topic: &str,
    batch_size: usize,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Polled>,
) {
    let max = batch_size * POLL_BATCHES;
    let lanes = consumer.context().lanes.clone();
    let mut arena = BytesMut::new();
    // `TOPIC/PARTITION` per partition, shared by the origins of its records.
    let mut partitions: BTreeMap<i32, Arc<str>> = BTreeMap::new();
    let mut burst = Vec::with_capacity(max);
    while !stop.load(Ordering::Relaxed) {
        // Per partition: the batch being filled, and how many of the burst's records are still
        // to come (so each batch is allocated once, at its size).
        let mut open: BTreeMap<i32, (Polled, usize)> = BTreeMap::new();
        let mut full = Vec::new();
        let mut add = |m: &rdsys::rd_kafka_message_t, open: &mut BTreeMap<i32, (Polled, usize)>| {
            let (batch, to_come) = open
                .entry(m.partition)
                .or_insert_with(|| (Polled::new(m.partition, lanes.epoch(m.partition), 0), 0));
            let partition = partitions
                .entry(m.partition)
                .or_insert_with(|| format!("{topic}/{}", m.partition).into());
            batch.records.push(to_record(m, partition, &mut arena));
            batch.offsets.push(m.offset);
            *to_come = to_come.saturating_sub(1);
            if batch.records.len() == batch_size {
                let next = Polled::new(m.partition, batch.epoch, (*to_come).min(batch_size));
                full.push(std::mem::replace(batch, next));
            }
        };
        // Events (rebalances run here), and the records of partitions that were not split off
        // (added to the topic after the start).
        let mut n = 0;
        while n < max {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => add(raw_message(&m), &mut open),
                Some(Err(e)) => {
                    tracing::warn!(target: "kafka", "consumer error: {e} (retrying)");
                    break;
                }
            }
            n += 1;
        }
        if lanes.failure().is_some() {
            return; // the source reports it
        }
        // Wait up to 100 ms for a first record, then linger briefly so batches fill up: each
        // batch costs a plugin call and a few hand-offs, so tiny batches are expensive.
        let first = if n == 0 { 100 } else { 0 };
        if fetched.read(first, 1, &mut burst) == 1 {
            let context = consumer.context();
            context
                .health
                .recovered(&context.uri, &[Cause::Unreachable]);
            fetched.read(POLL_LINGER_MS, max.saturating_sub(n + 1), &mut burst);
        }
        for m in &burst {
            let partition = m.get().partition;
            open.entry(partition)
                .or_insert_with(|| (Polled::new(partition, lanes.epoch(partition), 0), 0))
                .1 += 1;
        }
        for (batch, to_come) in open.values_mut() {
            let size = (*to_come).min(batch_size - batch.records.len());
            batch.records.reserve_exact(size);
            batch.offsets.reserve_exact(size);
        }
        for m in burst.drain(..) {
            match m.error() {
                None => add(m.get(), &mut open),
                Some(e) => tracing::warn!(target: "kafka", "consumer error: {e} (retrying)"),
            }
        }
        full.extend(
            open.into_values()
                .map(|(batch, _)| batch)
                .filter(|batch| !batch.records.is_empty()),
        );
        for batch in full {
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
    }
}

impl Source for KafkaSource {
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(self.next(max))
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.stop.store(true, Ordering::Relaxed);
            self.lanes.close();
            // Without this, an idle poll thread finishes its wait for records (up to 100 ms).
            self.consumer.context().wake_poller();
            self.polled.close(); // records still queued were not processed: not acked, re-read later
            while self.polled.recv().await.is_some() {}
            if let Some(poller) = self.poller.take() {
                tokio::task::block_in_place(|| poller.join())
                    .map_err(|_| anyhow!("the Kafka poll thread panicked"))?;
            }
            let consumer = self.consumer.clone();
            match tokio::task::block_in_place(|| consumer.commit_consumer_state(CommitMode::Sync)) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
                Err(e) => Err(anyhow!("committing offsets to {} failed: {e}", self.uri)),
            }
        })
    }
}
