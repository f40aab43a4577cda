//! A real Kafka-protocol broker for tests: the one `scripts/kafka.sh start` runs (address in
//! SLUICE_TEST_KAFKA, default 127.0.0.1:9092), or a private one for tests that pause it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

pub fn broker() -> String {
    std::env::var("SLUICE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The tansu binary (installed by scripts/kafka.sh).
pub fn tansu() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("path")
            .output()
            .expect("scripts/kafka.sh runs");
        assert!(
            out.status.success(),
            "scripts/kafka.sh path failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("path").trim())
    })
    .clone()
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn create_topic(broker: &str, name: &str, partitions: u32) {
    let out = Command::new(tansu())
        .args([
            "topic",
            "create",
            "--broker",
            &format!("tcp://{broker}"),
            "--partitions",
            &partitions.to_string(),
            name,
        ])
        .output()
        .expect("tansu topic create runs");
    assert!(
        out.status.success(),
        "creating topic {name} at {broker} failed (is the broker running? scripts/kafka.sh start): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kafka://BROKER/TOPIC?group=GROUP` with a short session timeout (tansu joins take about half
/// of it).
pub fn source_uri(broker: &str, topic: &str, group: &str) -> String {
    format!("kafka://{broker}/{topic}?group={group}&prop.session.timeout.ms=6000")
}

pub fn sink_uri(broker: &str, topic: &str) -> String {
    format!("kafka://{broker}/{topic}")
}

/// Produces `(key, value)` records and waits for every delivery.
pub fn produce(broker: &str, topic: &str, records: &[(Option<String>, String)]) {
    let records: Vec<Produced> = records
        .iter()
        .map(|(key, value)| Produced {
            key: key.clone(),
            value: value.clone(),
            ..Default::default()
        })
        .collect();
    produce_records(broker, topic, &records);
}

/// A record to produce: its key, value, Kafka timestamp and partition where given.
#[derive(Debug, Clone, Default)]
pub struct Produced {
    pub key: Option<String>,
    pub value: String,
    pub timestamp_ms: Option<i64>,
    pub partition: Option<i32>,
}

/// Produces the records and waits for every delivery.
pub fn produce_records(broker: &str, topic: &str, records: &[Produced]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut pending = Vec::with_capacity(records.len());
        for p in records {
            let mut r = FutureRecord::<str, str>::to(topic).payload(p.value.as_str());
            if let Some(k) = &p.key {
                r = r.key(k.as_str());
            }
            if let Some(ts) = p.timestamp_ms {
                r = r.timestamp(ts);
            }
            if let Some(partition) = p.partition {
                r = r.partition(partition);
            }
            pending.push(
                producer
                    .send_result(r)
                    .map_err(|(e, _)| e)
                    .expect("enqueued"),
            );
        }
        for p in pending {
            p.await
                .expect("not cancelled")
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    });
    producer.flush(Duration::from_secs(10)).expect("flushed");
}

/// One record read back: (partition, key, value, offset).
pub type Read = (i32, Option<String>, String, i64);

/// Reads a topic from the beginning (no group) until `expected` records arrived and nothing
/// more came for `settle`, or `timeout` passed. High watermarks are wrong on tansu, so this
/// counts records instead.
pub fn read_topic(
    broker: &str,
    topic: &str,
    expected: usize,
    settle: Duration,
    timeout: Duration,
) -> Vec<Read> {
    read_topic_with(broker, topic, expected, settle, timeout, |m| {
        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        (m.partition(), key, value, m.offset())
    })
}

/// The value of a record's first header with this name.
pub fn header(m: &rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// [`read_topic`], keeping what `f` takes from each record.
pub fn read_topic_with<T>(
    broker: &str,
    topic: &str,
    expected: usize,
    settle: Duration,
    timeout: Duration,
    f: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Vec<T> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    while started.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(f(&m));
                last = Instant::now();
            }
            Some(Err(e)) => eprintln!("read_topic: {e}"),
            None if out.len() >= expected && last.elapsed() >= settle => break,
            None => {}
        }
    }
    out
}

/// Count of each session_id in JSON values.
pub fn session_counts(records: &[Read]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, _, v, _) in records {
        let json: serde_json::Value =
            serde_json::from_str(v).unwrap_or_else(|e| panic!("output {v:?} is not JSON: {e}"));
        *counts
            .entry(json["session_id"].as_str().expect("session_id").to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// A broker of the test's own (for tests that pause it), stopped on drop.
pub struct PrivateBroker {
    pub child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl PrivateBroker {
    pub fn start() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{addr}"),
                "--advertised-listener-url",
                &format!("tcp://{addr}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .env_remove("CLUSTER_ID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "private tansu did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateBroker {
            child,
            addr,
            _dir: dir,
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that `feed` is still producing, so that a kill now lands mid-stream with records
/// yet to come. Feeds last several times what a test waits before its kill; this says so when
/// a machine is too slow for that, instead of letting the test pass without a kill mid-way.
pub fn assert_still_feeding(feed: &mut Child, log: &Path) {
    assert!(
        feed.try_wait().expect("try_wait").is_none(),
        "the feed ended before the kill, so it would not land mid-stream; its log:\n{}",
        super::process::log_of(log)
    );
}

/// A generator feeding `topic` at `rate` for `count` records, in the background.
pub fn feed(b: &str, topic: &str, rate: u32, count: u32, seed: u32, log: &Path) -> Child {
    let mock = super::plugin("mock");
    super::process::spawn(
        &[
            "run",
            "--plugin",
            mock.to_str().unwrap(),
            "--sink",
            &sink_uri(b, topic),
            "--rate",
            &rate.to_string(),
            "--count",
            &count.to_string(),
            "--set",
            &format!("seed={seed}"),
        ],
        log,
    )
}
