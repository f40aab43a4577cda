//! `kafka://HOST:PORT/TOPIC?group=G&prop.NAME=VALUE`: consumer-group sources and producing sinks
//! (rdkafka, bundled librdkafka).
//!
//! At-least-once: the source stores a partition's offset (committed as last + 1) only when the pipeline acks
//! the batch, which it does once every output derived from it is acknowledged by the sink
//! (`enable.auto.offset.store=false`); stored offsets are committed every second, on revoke and at
//! shutdown. A crash re-reads what was in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
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

/// Routes librdkafka's logs and errors to `tracing`, and commits on revoke.
pub struct KafkaContext {
    uri: String,
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

/// Reads a topic as a member of a consumer group. A thread polls the consumer and hands over
/// what it read grouped by partition; `next_batch` cuts that into batches of one partition each
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
/// How long a poll burst waits for more records after the first.
const POLL_LINGER: Duration = Duration::from_millis(5);

/// Records of one partition in offset order, with their offsets.
struct Polled {
    partition: i32,
    records: std::vec::IntoIter<Record>,
    offsets: std::vec::IntoIter<i64>,
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
            .create_with_context(KafkaContext {
                uri: uri.uri.clone(),
            })
            .with_context(|| format!("cannot create a Kafka consumer for {}", uri.uri))?;
        let partitions = await_topic(consumer.client(), uri).await?;
        consumer
            .subscribe(&[&uri.topic])
            .with_context(|| format!("cannot subscribe to {}", uri.uri))?;
        tracing::info!(uri = %uri.uri, partitions, group, "consuming");

        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, polled) = mpsc::channel(4);
        let topic: Arc<str> = Arc::from(uri.topic.as_str());
        let poller = {
            let (consumer, stop, topic) = (consumer.clone(), stop.clone(), topic.clone());
            std::thread::Builder::new()
                .name("kafka-poll".into())
                // Read several batches' worth per burst: split by partition, they still fill
                // batches (larger batches amortise the plugin call and the hand-offs).
                .spawn(move || poll(&consumer, &topic, batch_size * POLL_BATCHES, &stop, &tx))
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
        loop {
            if let Some(current) = &mut self.current {
                let records: Vec<Record> = current.records.by_ref().take(max).collect();
                if let Some(last) = current.offsets.by_ref().take(records.len()).last() {
                    let (consumer, topic, partition) =
                        (self.consumer.clone(), self.topic.clone(), current.partition);
                    let ack = Box::new(move || {
                        // librdkafka's offset store takes the last processed offset and commits
                        // it + 1, the next to read. Fails if the partition was revoked
                        // meanwhile; its new owner re-reads from the last commit.
                        if let Err(e) = consumer.store_offset(&topic, partition, last) {
                            tracing::debug!(partition, offset = last, "offset not stored: {e}");
                        }
                    });
                    return Some(SourceBatch {
                        records,
                        error: None,
                        lane: partition as u32,
                        ack: Some(ack),
                    });
                }
            }
            self.current = Some(self.polled.recv().await?);
        }
    }
}

/// Polls until `stop`: reads what is there (up to `max` records), groups it by partition in
/// arrival order and sends it on.
fn poll(
    consumer: &BaseConsumer<KafkaContext>,
    topic: &str,
    max: usize,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Polled>,
) {
    let (mut arena, mut origin) = (BytesMut::new(), String::new());
    while !stop.load(Ordering::Relaxed) {
        let mut by_partition: BTreeMap<i32, (Vec<Record>, Vec<i64>)> = BTreeMap::new();
        let mut n = 0;
        // Wait up to 100 ms for a first record, then linger briefly so batches fill up: each
        // batch costs a plugin call and a few hand-offs, so tiny batches are expensive.
        let mut deadline = Instant::now() + Duration::from_millis(100);
        while n < max {
            let wait = deadline.saturating_duration_since(Instant::now());
            match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    if n == 0 {
                        deadline = Instant::now() + POLL_LINGER;
                    }
                    let entry = by_partition.entry(m.partition()).or_default();
                    entry.0.push(to_record(&m, topic, &mut arena, &mut origin));
                    entry.1.push(m.offset());
                    n += 1;
                }
                Some(Err(e)) => {
                    tracing::warn!(target: "kafka", "consumer error: {e} (retrying)");
                    break;
                }
            }
        }
        for (partition, (records, offsets)) in by_partition {
            let polled = Polled {
                partition,
                records: records.into_iter(),
                offsets: offsets.into_iter(),
            };
            if tx.blocking_send(polled).is_err() {
                return;
            }
        }
    }
}

/// Copies a message out of librdkafka. Keys and values of one poll burst share one buffer
/// (`arena`), so a record costs no allocation of its own for them.
fn to_record(
    m: &rdkafka::message::BorrowedMessage<'_>,
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
    let key = m.key().map(&mut copy);
    let value = copy(m.payload().unwrap_or_default());
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    origin.clear();
    let _ = write!(origin, "{topic}/{}@{}", m.partition(), m.offset());
    Record {
        key,
        value,
        headers,
        timestamp_ms: m.timestamp().to_millis(),
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
            .create_with_context(KafkaContext {
                uri: uri.uri.clone(),
            })
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
