//! `kafka://HOST:PORT/TOPIC?group=G&prop.NAME=VALUE`: consumer-group sources and producing sinks
//! (rdkafka, bundled librdkafka).
//!
//! At-least-once: the source stores a partition's offset (committed as last + 1) only when the pipeline acks
//! the batch, which it does once every output derived from it is acknowledged by the sink
//! (`enable.auto.offset.store=false`); stored offsets are committed every second, on revoke and at
//! shutdown. A crash re-reads what was in flight.

mod lanes;
mod queue;
mod sink;
mod source;
mod uri;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

use crate::context::{Context, EndpointMetrics};
use crate::health::{Cause, Health};
use lanes::Lanes;
use queue::SplitQueues;

use crate::sync::Locked;
pub use sink::KafkaSink;
pub use source::KafkaSource;
pub use uri::{KafkaUri, CONSUMER_DEFAULTS, PRODUCER_DEFAULTS};

/// Routes librdkafka's logs and errors to `tracing`, commits on revoke, and keeps a source's
/// partition queues hooked to its fetch queue only while their partitions are assigned.
pub struct KafkaContext {
    uri: String,
    metrics: Arc<EndpointMetrics>,
    health: Arc<Health>,
    /// A source's partition queues, while its fetch queue lives.
    split: Mutex<Option<SplitQueues>>,
    /// A source's batches in flight per partition, and its sinks that keep positions.
    lanes: Arc<Lanes>,
}

impl KafkaContext {
    fn new(uri: &str, ctx: &Context, lanes: Arc<Lanes>) -> Self {
        KafkaContext {
            uri: uri.to_owned(),
            metrics: ctx.endpoints.clone(),
            health: ctx.health.clone(),
            split: Mutex::new(None),
            lanes,
        }
    }

    /// Hooks the queues of `partitions` to the fetch queue (`forward`) or unhooks them.
    fn forward(&self, partitions: &rdkafka::TopicPartitionList, forward: bool) {
        let split = self.split.locked();
        if let Some(split) = split.as_ref() {
            split.forward(partitions, forward);
        }
    }

    /// Makes a poll thread waiting on the fetch queue return at once (it checks its stop flag).
    fn wake_poller(&self) {
        let split = self.split.locked();
        if let Some(split) = split.as_ref() {
            split.wake();
        }
    }
}

impl ClientContext for KafkaContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): consumer lag per partition
    /// where the broker's high watermark is known, and produce retries.
    fn stats(&self, stats: rdkafka::Statistics) {
        // A broker that answers again clears the trouble its errors reported.
        if stats
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.health.recovered(&self.uri, &[Cause::Unreachable]);
        }
        if stats.client_type == "producer" {
            let retries = stats.brokers.values().map(|b| b.txretries).sum();
            self.metrics.set_kafka_produce_retries(&self.uri, retries);
            return;
        }
        for (partition, lag) in consumer_lags(&stats) {
            self.metrics
                .set_kafka_consumer_lag(&self.uri, partition, lag);
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
        self.health
            .trouble(&self.uri, Cause::Unreachable, format!("{error}: {reason}"));
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.forward(partitions, false);
            self.lanes.revoke(&partition_numbers(partitions));
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
            // Before any record of theirs is read: what the table holds is passed over.
            self.lanes.assigned(&partition_numbers(partitions));
            self.forward(partitions, true);
            self.health.waiting(&self.uri, None);
            tracing::info!(uri = %self.uri, partitions = ?partition_numbers(partitions), "partitions assigned");
        }
    }
}

/// A source's consumer. Closing it (when the last handle goes) leaves the group, which runs
/// the revoke and its synchronous commit: blocking work, kept off the async worker threads.
pub(super) struct GroupConsumer(Option<BaseConsumer<KafkaContext>>);

impl GroupConsumer {
    fn new(consumer: BaseConsumer<KafkaContext>) -> Self {
        GroupConsumer(Some(consumer))
    }
}

impl std::ops::Deref for GroupConsumer {
    type Target = BaseConsumer<KafkaContext>;

    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("the consumer is taken only when dropped")
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| drop(consumer))
            }
            _ => drop(consumer),
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
    let mut delays =
        crate::connector::backoff::delays(Duration::from_millis(500), Duration::from_secs(30));
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
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(uri = %uri.uri, "Kafka broker {} not reachable ({e}); retrying in {delay:?}", uri.brokers);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
