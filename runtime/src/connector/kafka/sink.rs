//! The producing sink: every record with its key, headers and timestamp; a batch is durable
//! once every delivery is acknowledged (acks=all, idempotent).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio::sync::Notify;

use super::{await_topic, KafkaContext, KafkaUri, PRODUCER_DEFAULTS};
use crate::connector::{BoxFuture, Refusals, Rejected, Sink, Written};
use crate::context::Context;
use crate::health::Cause;
use crate::record::Record;
use crate::sync::Locked;

/// How long a batch's deliveries may wait before the broker counts as in trouble (health).
const DELIVERY_STALLED: Duration = Duration::from_secs(1);

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
            let mut first = self.failure.locked();
            first.get_or_insert(f);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// `n` records of the batch will not be produced: nothing to wait for.
    fn settle_unsent(&self, n: usize) {
        if n > 0 && self.remaining.fetch_sub(n, Ordering::AcqRel) == n {
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
    pub async fn open(uri: &KafkaUri, ctx: &Context) -> Result<Self> {
        let producer: BaseProducer<KafkaContext> = uri
            .config(PRODUCER_DEFAULTS)
            .create_with_context(KafkaContext::new(&uri.uri, ctx, Default::default()))
            .with_context(|| format!("cannot create a Kafka producer for {}", uri.uri))?;
        let partitions = await_topic(producer.client(), uri).await?;
        tracing::info!(uri = %uri.uri, partitions, "producing");
        Ok(KafkaSink {
            producer: Arc::new(producer),
            topic: Arc::from(uri.topic.as_str()),
            uri: Arc::from(uri.uri.as_str()),
        })
    }

    async fn send(&self, records: &[Record], refusals: Refusals) -> Result<Written> {
        let batch = Arc::new(BatchDelivery {
            remaining: AtomicUsize::new(records.len()),
            failure: Mutex::new(None),
            done: Notify::new(),
        });
        let mut rejected = Vec::new();
        for (index, r) in records.iter().enumerate() {
            // Under StopAtInput nothing after a refused record is produced. (Outputs of its
            // input produced before it stay: a delivery cannot be taken back. Kafka sinks are
            // at least once, so they are written again after the restart.)
            if refusals == Refusals::StopAtInput && !rejected.is_empty() {
                batch.settle_unsent(records.len() - index);
                break;
            }
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
            let waiting = std::time::Instant::now();
            let mut stalled = false;
            while batch.remaining.load(Ordering::Acquire) > 0 {
                producer.poll(Duration::ZERO);
                if batch.remaining.load(Ordering::Acquire) == 0 {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(1), batch.done.notified()).await;
                // Deliveries take milliseconds; one that takes seconds means the broker is not
                // answering (librdkafka retries until message.timeout.ms).
                if !stalled && waiting.elapsed() > DELIVERY_STALLED {
                    stalled = true;
                    let left = batch.remaining.load(Ordering::Acquire);
                    producer.context().health.trouble(
                        &uri,
                        Cause::Unacknowledged,
                        format!("{left} deliveries not acknowledged after {DELIVERY_STALLED:?}"),
                    );
                }
            }
            // Delivered: the broker answers and acknowledges.
            producer
                .context()
                .health
                .recovered(&uri, &[Cause::Unreachable, Cause::Unacknowledged]);
            let failure = batch.failure.locked().take();
            match failure {
                Some(e) => bail!("delivery to {uri} failed: {e}"),
                None => Ok(()),
            }
        });
        Ok(Written { rejected, durable })
    }
}

impl Sink for KafkaSink {
    fn write<'a>(
        &'a mut self,
        records: &'a [Record],
        refusals: Refusals,
    ) -> BoxFuture<'a, Result<Written>> {
        Box::pin(self.send(records, refusals))
    }

    fn fork(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }

    fn keeps_headers(&self) -> bool {
        true
    }

    fn keeps_write_order(&self) -> bool {
        true // the forks share one producer: a partition gets records in the order written
    }
}
