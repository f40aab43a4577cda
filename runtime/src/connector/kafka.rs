//! `kafka://HOST:PORT/TOPIC?group=G&prop.NAME=VALUE`: consumer-group sources and producing sinks
//! (rdkafka, bundled librdkafka).
//!
//! At-least-once: the source stores a partition's offset (committed as last + 1) only when the pipeline acks
//! the batch, which it does once every output derived from it is acknowledged by the sink
//! (`enable.auto.offset.store=false`); stored offsets are committed every second, on revoke and at
//! shutdown. A crash re-reads what was in flight.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use rdkafka::bindings as rdsys;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use tokio::sync::{mpsc, Notify};

use super::{BoxFuture, Rejected, Sink, Source, SourceBatch, Written};
use crate::record::Record;

/// A parsed `kafka://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaUri {
    pub uri: String,
    pub brokers: String,
    pub topic: String,
    pub group: Option<String>,
    /// librdkafka properties from `prop.NAME=VALUE`.
    pub props: Vec<(String, String)>,
}

impl KafkaUri {
    pub fn parse(uri: &str) -> Result<Self> {
        let bad = |why: &str| {
            anyhow!("bad Kafka URI `{uri}`: {why}; expected kafka://HOST:PORT/TOPIC?group=GROUP")
        };
        let rest = uri
            .strip_prefix("kafka://")
            .ok_or_else(|| bad("it does not start with kafka://"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (brokers, topic) = path.split_once('/').ok_or_else(|| bad("no /TOPIC"))?;
        if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
            return Err(bad("give the broker as HOST:PORT"));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(valid) {
            return Err(bad(
                "the topic name must be 1-249 characters of [a-zA-Z0-9._-]",
            ));
        }
        let mut parsed = KafkaUri {
            uri: uri.to_owned(),
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            group: None,
            props: vec![],
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(&format!("`{pair}` is not NAME=VALUE")))?;
            match (k, k.strip_prefix("prop.")) {
                ("group", _) if !v.is_empty() => parsed.group = Some(v.to_owned()),
                (_, Some(prop)) if !prop.is_empty() => {
                    parsed.props.push((prop.to_owned(), v.to_owned()))
                }
                _ => {
                    return Err(bad(&format!(
                        "unknown parameter `{k}` (known: group, prop.NAME)"
                    )))
                }
            }
        }
        Ok(parsed)
    }

    fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.props {
            config.set(k, v);
        }
        config
    }
}

/// Routes librdkafka's logs and errors to `tracing`, commits on revoke, and keeps a source's
/// partition queues hooked to its fetch queue only while their partitions are assigned.
pub struct KafkaContext {
    uri: String,
    split: Mutex<Option<SplitQueues>>,
}

impl KafkaContext {
    fn new(uri: &str) -> Self {
        KafkaContext {
            uri: uri.to_owned(),
            split: Mutex::new(None),
        }
    }

    /// Hooks the queues of `partitions` to the fetch queue (`forward`) or unhooks them.
    /// librdkafka does not carry forwarded partition queues across a rebalance: unhooked on
    /// revoke and hooked again on assign, they keep delivering (confluentinc/librdkafka#1335).
    fn forward(&self, partitions: &rdkafka::TopicPartitionList, forward: bool) {
        let split = self.split.lock().unwrap_or_else(|p| p.into_inner());
        let Some(split) = split.as_ref() else { return };
        for e in partitions.elements() {
            let Some(q) = usize::try_from(e.partition())
                .ok()
                .and_then(|p| split.partitions.get(p))
            else {
                continue;
            };
            let to = if forward {
                split.queue.as_ptr()
            } else {
                std::ptr::null_mut()
            };
            // SAFETY: live handles; `FetchQueue::drop` takes them out of here before destroying.
            unsafe { rdsys::rd_kafka_queue_forward(q.as_ptr(), to) };
        }
    }

    /// Makes a poll thread waiting on the fetch queue return at once (it checks its stop flag).
    fn wake_poller(&self) {
        let split = self.split.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(split) = split.as_ref() {
            // SAFETY: a live handle, as in `forward`.
            unsafe { rdsys::rd_kafka_queue_yield(split.queue.as_ptr()) };
        }
    }
}

impl ClientContext for KafkaContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): consumer lag per partition
    /// where the broker's high watermark is known, and produce retries.
    fn stats(&self, stats: rdkafka::Statistics) {
        if stats.client_type == "producer" {
            let retries = stats.brokers.values().map(|b| b.txretries).sum();
            crate::metrics::set_kafka_produce_retries(&self.uri, retries);
            return;
        }
        for (partition, lag) in consumer_lags(&stats) {
            crate::metrics::set_kafka_consumer_lag(&self.uri, partition, lag);
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let uri = &self.uri;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "kafka", uri, "{fac}: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "kafka", uri, "{fac}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "kafka", uri, "{fac}: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "kafka", uri, "{fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Transport errors are retried by librdkafka with backoff: say so, don't stop.
        tracing::warn!(target: "kafka", uri = %self.uri, "{error}: {reason} (retrying)");
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.forward(partitions, false);
            // Commit what was acknowledged for the partitions we are about to lose.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!(uri = %self.uri, "commit on revoke failed: {e}"),
            }
            tracing::info!(uri = %self.uri, partitions = ?partition_numbers(partitions), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.forward(partitions, true);
            tracing::info!(uri = %self.uri, partitions = ?partition_numbers(partitions), "partitions assigned");
        }
    }
}

/// Each partition's lag (high watermark - committed offset), or `None` where it is not known:
/// no high watermark or committed offset yet (librdkafka says -1), or a partition not ours.
fn consumer_lags(stats: &rdkafka::Statistics) -> Vec<(i32, Option<i64>)> {
    stats
        .topics
        .values()
        .flat_map(|t| t.partitions.values())
        .filter(|p| p.partition >= 0) // -1 is librdkafka's internal "unassigned" partition
        .map(|p| {
            let known = p.desired && p.hi_offset >= 0 && p.consumer_lag >= 0;
            (p.partition, known.then_some(p.consumer_lag))
        })
        .collect()
}

fn partition_numbers(tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Waits until the broker answers and the topic exists. An unreachable broker is retried with
/// backoff (and said so in the log); a missing topic is an error naming the URI.
async fn await_topic<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    uri: &KafkaUri,
) -> Result<usize> {
    let mut backoff = Duration::from_millis(500);
    loop {
        let metadata = tokio::task::block_in_place(|| {
            client.fetch_metadata(Some(&uri.topic), Duration::from_secs(5))
        });
        match metadata {
            Ok(md) => {
                let topic = md.topics().iter().find(|t| t.name() == uri.topic);
                match topic {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => return Ok(t.partitions().len()),
                    _ => bail!(
                        "topic `{}` does not exist at {}: create it (e.g. `tansu topic create --partitions N {}`) or fix the URI",
                        uri.topic,
                        uri.uri,
                        uri.topic
                    ),
                }
            }
            Err(e) => {
                tracing::warn!(uri = %uri.uri, "Kafka broker {} not reachable ({e}); retrying in {backoff:?}", uri.brokers);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Consumer group defaults (overridable with `prop.NAME=VALUE`).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.offset.store", "false"),
    ("enable.auto.commit", "true"),
    ("auto.commit.interval.ms", "1000"),
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", "10000"),
    // librdkafka's 1000 ms default starves a consumer slower than its fetcher.
    ("fetch.queue.backoff.ms", "10"),
    // Consumer lag for /metrics.
    ("statistics.interval.ms", "5000"),
];

/// Reads a topic as a member of a consumer group. A thread reads the topic's partition queues in
/// bursts (serving the consumer's events in between) and hands over what it read grouped by
/// partition; `next_batch` cuts that into batches of one partition each
/// (lane = partition), each acked by storing the offset after its last record.
pub struct KafkaSource {
    polled: mpsc::Receiver<Polled>,
    current: Option<Polled>,
    consumer: Arc<BaseConsumer<KafkaContext>>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
    uri: String,
    topic: Arc<str>,
}

/// How many batches' worth of records one poll burst may read.
const POLL_BATCHES: usize = 8;
/// How long a poll burst waits for more records after the first, in ms.
const POLL_LINGER_MS: i32 = 5;

/// A batch of one partition's records in offset order (at most the batch size), with their
/// offsets.
struct Polled {
    partition: i32,
    records: Vec<Record>,
    offsets: Vec<i64>,
}

impl Polled {
    fn new(partition: i32, capacity: usize) -> Self {
        Polled {
            partition,
            records: Vec::with_capacity(capacity),
            offsets: Vec::with_capacity(capacity),
        }
    }
}

impl KafkaSource {
    pub async fn open(uri: &KafkaUri, batch_size: usize) -> Result<Self> {
        let group = uri.group.as_deref().ok_or_else(|| {
            anyhow!(
                "Kafka source {} needs a consumer group: add ?group=NAME",
                uri.uri
            )
        })?;
        let mut config = uri.config(CONSUMER_DEFAULTS);
        config.set("group.id", group);
        let consumer: BaseConsumer<KafkaContext> = config
            .create_with_context(KafkaContext::new(&uri.uri))
            .with_context(|| format!("cannot create a Kafka consumer for {}", uri.uri))?;
        let partitions = await_topic(consumer.client(), uri).await?;
        consumer
            .subscribe(&[&uri.topic])
            .with_context(|| format!("cannot subscribe to {}", uri.uri))?;
        tracing::info!(uri = %uri.uri, partitions, group, "consuming");

        let consumer = Arc::new(consumer);
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
        })
    }

    async fn next(&mut self, max: usize) -> Option<SourceBatch> {
        let mut polled = match self.current.take() {
            Some(rest) => rest,
            None => self.polled.recv().await?,
        };
        // Fewer records wanted (a `--count` ending): the rest is the next batch.
        if polled.records.len() > max {
            self.current = Some(Polled {
                partition: polled.partition,
                records: polled.records.split_off(max),
                offsets: polled.offsets.split_off(max),
            });
        }
        let (consumer, topic, partition) =
            (self.consumer.clone(), self.topic.clone(), polled.partition);
        let last = polled.offsets.last().copied();
        let ack = last.map(|last| -> crate::connector::Ack {
            Box::new(move || {
                // librdkafka's offset store takes the last processed offset and commits it + 1,
                // the next to read. Fails if the partition was revoked meanwhile; its new owner
                // re-reads from the last commit.
                if let Err(e) = consumer.store_offset(&topic, partition, last) {
                    tracing::debug!(partition, offset = last, "offset not stored: {e}");
                }
            })
        });
        Some(SourceBatch {
            records: polled.records,
            error: None,
            lane: partition as u32,
            ack,
        })
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
    let (mut arena, mut origin) = (BytesMut::new(), String::new());
    let mut burst = Vec::with_capacity(max);
    while !stop.load(Ordering::Relaxed) {
        // Per partition: the batch being filled, and how many of the burst's records are still
        // to come (so each batch is allocated once, at its size).
        let mut open: BTreeMap<i32, (Polled, usize)> = BTreeMap::new();
        let mut full = Vec::new();
        let mut add = |m: &rdsys::rd_kafka_message_t, open: &mut BTreeMap<i32, (Polled, usize)>| {
            let (batch, to_come) = open
                .entry(m.partition)
                .or_insert_with(|| (Polled::new(m.partition, 0), 0));
            batch
                .records
                .push(to_record(m, topic, &mut arena, &mut origin));
            batch.offsets.push(m.offset);
            *to_come = to_come.saturating_sub(1);
            if batch.records.len() == batch_size {
                let next = Polled::new(m.partition, (*to_come).min(batch_size));
                full.push(std::mem::replace(batch, next));
            }
        };
        // Events (rebalances run here), and the records of partitions that were not split off
        // (added to the topic after the start).
        let mut n = 0;
        while n < max {
            match consumer.poll(Duration::ZERO) {
                None => break,
                // SAFETY: the pointer is the live message `m` borrows.
                Some(Ok(m)) => add(unsafe { &*m.ptr() }, &mut open),
                Some(Err(e)) => {
                    tracing::warn!(target: "kafka", "consumer error: {e} (retrying)");
                    break;
                }
            }
            n += 1;
        }
        // Wait up to 100 ms for a first record, then linger briefly so batches fill up: each
        // batch costs a plugin call and a few hand-offs, so tiny batches are expensive.
        let first = if n == 0 { 100 } else { 0 };
        if fetched.read(first, 1, &mut burst) == 1 {
            fetched.read(POLL_LINGER_MS, max.saturating_sub(n + 1), &mut burst);
        }
        for m in &burst {
            let partition = m.get().partition;
            open.entry(partition)
                .or_insert_with(|| (Polled::new(partition, 0), 0))
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

/// The handles of a source's partition queues (indexed by partition) and of the queue they
/// forward to while assigned.
struct SplitQueues {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    partitions: Vec<NonNull<rdsys::rd_kafka_queue_t>>,
}

// SAFETY: librdkafka queue handles may be used from any thread.
unsafe impl Send for SplitQueues {}

/// The topic's partitions, split off the consumer queue into one queue of ours that is read in
/// bursts (`rd_kafka_consume_batch_queue`): `BaseConsumer::poll` costs an event and several
/// clock reads per record, this neither. Rebalance, commit and error events stay on the
/// consumer queue, whose rebalance hooks (un)hook each partition's queue (`KafkaContext::forward`).
struct FetchQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// The handles go before their consumer, and are taken out of its context first.
    consumer: Arc<BaseConsumer<KafkaContext>>,
}

// SAFETY: as for `SplitQueues`.
unsafe impl Send for FetchQueue {}

impl FetchQueue {
    fn split(
        consumer: &Arc<BaseConsumer<KafkaContext>>,
        topic: &str,
        partitions: usize,
    ) -> Result<Self> {
        let rk = consumer.client().native_ptr();
        let name = std::ffi::CString::new(topic).context("a topic name with a NUL byte")?;
        // SAFETY: `rk` is a live client; each handle is destroyed in `drop`.
        let split = unsafe {
            let queue = NonNull::new(rdsys::rd_kafka_queue_new(rk))
                .context("librdkafka could not make a queue")?;
            let mut split = SplitQueues {
                queue,
                partitions: Vec::with_capacity(partitions),
            };
            for p in 0..partitions {
                let q = rdsys::rd_kafka_queue_get_partition(rk, name.as_ptr(), p as i32);
                let Some(q) = NonNull::new(q) else { break };
                // Unhooked until assigned: librdkafka then leaves its forwarding to us.
                rdsys::rd_kafka_queue_forward(q.as_ptr(), std::ptr::null_mut());
                split.partitions.push(q);
            }
            split
        };
        let queue = split.queue;
        *consumer
            .context()
            .split
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(split);
        Ok(FetchQueue {
            queue,
            consumer: consumer.clone(),
        })
    }

    /// Appends up to `max` fetched messages to `out`, waiting up to `timeout_ms` for them all.
    fn read(&self, timeout_ms: i32, max: usize, out: &mut Vec<FetchedMessage>) -> usize {
        if max == 0 {
            return 0;
        }
        let mut raw: Vec<*mut rdsys::rd_kafka_message_t> = Vec::with_capacity(max);
        // SAFETY: `raw` has room for `max` pointers, and librdkafka wrote the first `n`.
        let n = unsafe {
            let n = rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                raw.as_mut_ptr(),
                max,
            );
            raw.set_len(n.max(0) as usize);
            raw.len()
        };
        out.extend(raw.into_iter().filter_map(NonNull::new).map(FetchedMessage));
        n
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        let split = self
            .consumer
            .context()
            .split
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // SAFETY: handles from `split`, no longer reachable from the context, destroyed once.
        if let Some(split) = split {
            unsafe {
                for q in &split.partitions {
                    rdsys::rd_kafka_queue_destroy(q.as_ptr());
                }
                rdsys::rd_kafka_queue_destroy(split.queue.as_ptr());
            }
        }
    }
}

/// A message from `rd_kafka_consume_batch_queue`, destroyed when dropped.
struct FetchedMessage(NonNull<rdsys::rd_kafka_message_t>);

impl FetchedMessage {
    fn get(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: live until `drop`.
        unsafe { self.0.as_ref() }
    }

    /// A consumer error delivered in place of a record (e.g. an offset out of range).
    fn error(&self) -> Option<KafkaError> {
        let err = self.get().err;
        (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| KafkaError::MessageConsumption(err.into()))
    }
}

impl Drop for FetchedMessage {
    fn drop(&mut self) {
        // SAFETY: owned, destroyed once.
        unsafe { rdsys::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}

/// Copies a message out of librdkafka. Keys and values of one poll burst share one buffer
/// (`arena`), so a record costs no allocation of its own for them.
fn to_record(
    m: &rdsys::rd_kafka_message_t,
    topic: &str,
    arena: &mut BytesMut,
    origin: &mut String,
) -> Record {
    let mut copy = |bytes: &[u8]| {
        if arena.capacity() - arena.len() < bytes.len() {
            arena.reserve(bytes.len().max(ARENA_CHUNK));
        }
        arena.extend_from_slice(bytes);
        arena.split().freeze()
    };
    // SAFETY: librdkafka's pointers are valid for their lengths while `m` lives.
    let bytes = |ptr: *const std::ffi::c_void, len: usize| {
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
    };
    let key = bytes(m.key, m.key_len).map(&mut copy);
    let value = copy(bytes(m.payload, m.len).unwrap_or_default());
    let mut headers = Vec::new();
    let ok = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    // SAFETY: the headers belong to `m`; names are NUL-terminated, values valid for their size.
    unsafe {
        let mut hdrs = std::ptr::null_mut();
        if rdsys::rd_kafka_message_headers(m, &mut hdrs) == ok {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            let mut i = 0;
            while rdsys::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) == ok {
                let name = std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .into_owned();
                let value = bytes(value, size).map(Bytes::copy_from_slice);
                headers.push((name, value.unwrap_or_default()));
                i += 1;
            }
        }
    }
    let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    // SAFETY: reads `m`'s own fields.
    let timestamp = unsafe { rdsys::rd_kafka_message_timestamp(m, &mut kind) };
    let known = kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    origin.clear();
    let _ = write!(origin, "{topic}/{}@{}", m.partition, m.offset);
    Record {
        key,
        value,
        headers,
        timestamp_ms: known.then_some(timestamp),
        origin: Some(Arc::from(origin.as_str())),
        output: None,
    }
}

/// The size of the shared buffers records are copied into.
const ARENA_CHUNK: usize = 1 << 20;

impl Source for KafkaSource {
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(async move { Ok(self.next(max).await) })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.stop.store(true, Ordering::Relaxed);
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

/// Producer defaults: durable (acks=all, idempotent) and batched.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "500000"),
    // Produce retries for /metrics.
    ("statistics.interval.ms", "5000"),
];

/// Produces each record to a topic, keeping key, headers and timestamp.
#[derive(Clone)]
pub struct KafkaSink {
    producer: Arc<BaseProducer<KafkaContext>>,
    topic: Arc<str>,
    uri: Arc<str>,
}

/// Counts a batch's deliveries down; librdkafka's delivery callback reports each one. Cheaper
/// than a future per record. The callbacks run inside `poll`, which the sink calls itself (after
/// each batch and while a batch is awaited) instead of a polling thread: measured ~5% less CPU.
pub struct BatchDelivery {
    remaining: AtomicUsize,
    failure: Mutex<Option<String>>,
    done: Notify,
}

impl BatchDelivery {
    fn settle(&self, failure: Option<String>) {
        if let Some(f) = failure {
            let mut first = self
                .failure
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            first.get_or_insert(f);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

impl ProducerContext for KafkaContext {
    type DeliveryOpaque = Arc<BatchDelivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<BatchDelivery>) {
        batch.settle(result.as_ref().err().map(|(e, _)| e.to_string()));
    }
}

impl KafkaSink {
    pub async fn open(uri: &KafkaUri) -> Result<Self> {
        let producer: BaseProducer<KafkaContext> = uri
            .config(PRODUCER_DEFAULTS)
            .create_with_context(KafkaContext::new(&uri.uri))
            .with_context(|| format!("cannot create a Kafka producer for {}", uri.uri))?;
        let partitions = await_topic(producer.client(), uri).await?;
        tracing::info!(uri = %uri.uri, partitions, "producing");
        Ok(KafkaSink {
            producer: Arc::new(producer),
            topic: Arc::from(uri.topic.as_str()),
            uri: Arc::from(uri.uri.as_str()),
        })
    }

    async fn send(&self, records: &[Record]) -> Result<Written> {
        let batch = Arc::new(BatchDelivery {
            remaining: AtomicUsize::new(records.len()),
            failure: Mutex::new(None),
            done: Notify::new(),
        });
        let mut rejected = Vec::new();
        for (index, r) in records.iter().enumerate() {
            let mut record =
                BaseRecord::<[u8], [u8], _>::with_opaque_to(&self.topic, batch.clone())
                    .payload(&r.value[..]);
            if let Some(key) = &r.key {
                record = record.key(&key[..]);
            }
            if let Some(ts) = r.timestamp_ms {
                record = record.timestamp(ts);
            }
            if !r.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
                for (k, v) in &r.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(&v[..]),
                    });
                }
                record = record.headers(headers);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    // The local queue is full: wait for deliveries to drain it (backpressure).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.producer.poll(Duration::ZERO);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    // This record can never be produced: it goes where the error policy says
                    // (skip, dead letters or stop), its neighbours go on.
                    Err((
                        KafkaError::MessageProduction(
                            code @ (RDKafkaErrorCode::MessageSizeTooLarge
                            | RDKafkaErrorCode::InvalidMessageSize
                            | RDKafkaErrorCode::InvalidMessage
                            | RDKafkaErrorCode::InvalidRecord),
                        ),
                        _,
                    )) => {
                        batch.settle(None);
                        let message = match code {
                            RDKafkaErrorCode::MessageSizeTooLarge => format!(
                                "too large for {} ({} bytes of value; raise prop.message.max.bytes if the broker takes it)",
                                self.uri,
                                r.value.len()
                            ),
                            code => format!("{code}, producing to {}", self.uri),
                        };
                        rejected.push(Rejected { index, message });
                        break;
                    }
                    Err((e, _)) => bail!("cannot produce to {}: {e}", self.uri),
                }
            }
        }
        // Delivery reports are served by whoever polls: here, and while waiting below.
        self.producer.poll(Duration::ZERO);
        let (uri, producer) = (self.uri.clone(), self.producer.clone());
        let durable = Box::pin(async move {
            while batch.remaining.load(Ordering::Acquire) > 0 {
                producer.poll(Duration::ZERO);
                if batch.remaining.load(Ordering::Acquire) == 0 {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(1), batch.done.notified()).await;
            }
            let failure = batch
                .failure
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            match failure {
                Some(e) => bail!("delivery to {uri} failed: {e}"),
                None => Ok(()),
            }
        });
        Ok(Written { rejected, durable })
    }
}

impl Sink for KafkaSink {
    fn write<'a>(&'a mut self, records: &'a [Record]) -> BoxFuture<'a, Result<Written>> {
        Box::pin(self.send(records))
    }

    fn fork(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse() {
        let u = KafkaUri::parse(
            "kafka://127.0.0.1:9092/user_sessions?group=enrich&prop.session.timeout.ms=6000",
        )
        .unwrap();
        assert_eq!(
            (u.brokers.as_str(), u.topic.as_str(), u.group.as_deref()),
            ("127.0.0.1:9092", "user_sessions", Some("enrich"))
        );
        assert_eq!(
            u.props,
            vec![("session.timeout.ms".to_string(), "6000".to_string())]
        );
        assert_eq!(KafkaUri::parse("kafka://h:1/t").unwrap().group, None);
    }

    #[test]
    fn consumer_lag_is_reported_only_where_known() {
        use rdkafka::statistics::{Partition, Statistics, Topic};
        let partition = |partition, desired, hi_offset, consumer_lag| Partition {
            partition,
            desired,
            hi_offset,
            consumer_lag,
            ..Default::default()
        };
        let mut stats = Statistics::default();
        stats.topics.insert(
            "t".into(),
            Topic {
                partitions: [
                    partition(-1, false, -1, -1),
                    partition(0, true, 120, 20),
                    partition(1, true, -1, -1),
                    partition(2, false, 50, 50),
                    partition(3, true, 40, 0),
                ]
                .into_iter()
                .map(|p| (p.partition, p))
                .collect(),
                ..Default::default()
            },
        );
        let mut lags = consumer_lags(&stats);
        lags.sort();
        assert_eq!(lags, [(0, Some(20)), (1, None), (2, None), (3, Some(0))]);
    }

    #[test]
    fn bad_uris_name_the_uri_and_the_fix() {
        for (uri, why) in [
            ("kafka://127.0.0.1:9092", "no /TOPIC"),
            ("kafka://127.0.0.1/t", "HOST:PORT"),
            ("kafka://h:1/bad topic", "topic name"),
            ("kafka://h:1/", "topic name"),
            ("kafka://h:1/t?grop=x", "unknown parameter `grop`"),
            ("kafka://h:1/t?group", "not NAME=VALUE"),
        ] {
            let e = KafkaUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(uri) && e.contains(why), "{uri}: {e}");
        }
    }
}
