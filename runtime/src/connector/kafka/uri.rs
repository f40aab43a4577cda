//! `kafka://HOST:PORT/TOPIC?group=G&prop.NAME=VALUE`, and the client settings it starts from.

use anyhow::Result;
use rdkafka::config::ClientConfig;

use crate::connector::uri::Query;

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

const USAGE: &str = "expected kafka://HOST:PORT/TOPIC?group=GROUP&prop.NAME=VALUE";

impl KafkaUri {
    pub fn parse(uri: &str) -> Result<Self> {
        Self::parse_parts(uri).map_err(|e| anyhow::anyhow!("bad Kafka URI {e}"))
    }

    fn parse_parts(uri: &str) -> Result<Self> {
        let (path, mut query) = Query::parse(uri, USAGE)?;
        let Some(rest) = path.strip_prefix("kafka://") else {
            return Err(query.error("it does not start with kafka://"));
        };
        let Some((brokers, topic)) = rest.split_once('/') else {
            return Err(query.error("no /TOPIC"));
        };
        if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
            return Err(query.error("give the broker as HOST:PORT"));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(valid) {
            return Err(query.error("the topic name must be 1-249 characters of [a-zA-Z0-9._-]"));
        }
        let group = query.take("group").filter(|g| !g.is_empty());
        let props = query.take_prefixed("prop.")?;
        query.finish("group, prop.NAME")?;
        Ok(KafkaUri {
            uri: uri.to_owned(),
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            group,
            props,
        })
    }

    /// The client settings: the broker, then `defaults`, then the URI's `prop.`s.
    pub(super) fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
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
    fn bad_uris_name_the_uri_and_the_fix() {
        for (uri, why) in [
            ("kafka://127.0.0.1:9092", "no /TOPIC"),
            ("kafka://127.0.0.1/t", "HOST:PORT"),
            ("kafka://h:1/bad topic", "topic name"),
            ("kafka://h:1/", "topic name"),
            ("kafka://h:1/t?grop=x", "unknown parameter `grop`"),
            ("kafka://h:1/t?prop.=x", "names no setting"),
            ("kafka://h:1/t?group", "not NAME=VALUE"),
        ] {
            let e = KafkaUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(uri) && e.contains(why), "{uri}: {e}");
        }
    }
}
