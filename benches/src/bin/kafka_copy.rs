//! The baseline for the Kafka benchmark: a raw topic-to-topic copy in Rust with the runtime's
//! own client settings and no plugin. Prints records/s from the first record read to the last
//! delivery acknowledged.
//!
//!     kafka_copy BROKER IN_TOPIC OUT_TOPIC GROUP COUNT

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice::connector::kafka::{CONSUMER_DEFAULTS, PRODUCER_DEFAULTS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, broker, input, output, group, count] = &args[..] else {
        return Err("usage: kafka_copy BROKER IN_TOPIC OUT_TOPIC GROUP COUNT".into());
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
    while copied < count {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = message?;
        started.get_or_insert_with(Instant::now);
        let mut record =
            BaseRecord::<[u8], [u8]>::to(output).payload(m.payload().unwrap_or_default());
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
        "raw-copy {copied} records in {:.2} s = {:.0} records/s",
        elapsed.as_secs_f64(),
        copied as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
