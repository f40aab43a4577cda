//! The baselines for the Kafka benchmark: a raw topic-to-topic copy in Rust with the runtime's
//! own client settings and no plugin, and (`--enrich`) the same loop doing the enrich rule
//! natively, compiled in: the least any implementation of the job pays, without isolation,
//! batching or at-least-once bookkeeping. Prints records/s from the first record read to the
//! last delivery acknowledged.
//!
//!     kafka_copy [--enrich] BROKER IN_TOPIC OUT_TOPIC GROUP COUNT

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice::connector::kafka::{CONSUMER_DEFAULTS, PRODUCER_DEFAULTS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let enrich = args.first().is_some_and(|a| a == "--enrich");
    if enrich {
        args.remove(0);
    }
    let [broker, input, output, group, count] = &args[..] else {
        return Err("usage: kafka_copy [--enrich] BROKER IN_TOPIC OUT_TOPIC GROUP COUNT".into());
    };
    let count: usize = count.parse()?;
    let config = |defaults: &[(&str, &str)]| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", broker);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        c
    };
    let consumer: BaseConsumer = config(CONSUMER_DEFAULTS)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .create()?;
    let producer: BaseProducer = config(PRODUCER_DEFAULTS).create()?;
    consumer.subscribe(&[input])?;
    let mut started = None;
    let mut copied = 0;
    let mut enriched = Vec::new();
    while copied < count {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = message?;
        started.get_or_insert_with(Instant::now);
        let mut payload = m.payload().unwrap_or_default();
        if enrich {
            enriched.clear();
            enrich::enrich_json(payload, &mut enriched)
                .map_err(|e| format!("record {}@{}: {e}", m.partition(), m.offset()))?;
            payload = &enriched;
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(output).payload(payload);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
        copied += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let elapsed = started.map_or(Duration::ZERO, |s| s.elapsed());
    println!(
        "{} {copied} records in {:.2} s = {:.0} records/s",
        if enrich { "native-enrich" } else { "raw-copy" },
        elapsed.as_secs_f64(),
        copied as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
