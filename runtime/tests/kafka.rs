//! Kafka endpoints against a real Kafka-protocol broker (tansu, started by scripts/kafka.sh).
//! Each test uses its own topics and consumer groups.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::kafka::*;
use common::process::*;
use common::*;

fn ids_of(records: &[Read]) -> HashSet<String> {
    session_counts(records).into_keys().collect()
}

/// Reads the output topic until it holds every expected session (or `timeout`).
fn read_all_ids(
    broker: &str,
    topic: &str,
    expected: &HashSet<String>,
    timeout: Duration,
) -> Vec<Read> {
    let started = Instant::now();
    loop {
        let read = read_topic(
            broker,
            topic,
            expected.len(),
            Duration::from_secs(1),
            Duration::from_secs(20),
        );
        let seen = ids_of(&read);
        if expected.is_subset(&seen) || started.elapsed() > timeout {
            return read;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits for the generator to finish, then for every session it wrote to `input` to show up in
/// `output`. Returns what was read from both.
fn await_delivery(
    b: &str,
    generator: &mut Child,
    gen_log: &Path,
    input: &str,
    output: &str,
    n: usize,
) -> (Vec<Read>, Vec<Read>) {
    assert!(
        wait_exit(generator, Duration::from_secs(90), gen_log).success(),
        "{}",
        log_of(gen_log)
    );
    let inputs = read_topic(b, input, n, Duration::from_secs(1), Duration::from_secs(60));
    let expected = ids_of(&inputs);
    assert_eq!(
        expected.len(),
        n,
        "the generator's records are all in {input}"
    );
    let outputs = read_all_ids(b, output, &expected, Duration::from_secs(120));
    (inputs, outputs)
}

/// Fails with where the missing records were in the input, and the runtime's warnings.
fn assert_nothing_lost(input: &[Read], output: &[Read], logs: &[&Path]) {
    let seen = ids_of(output);
    let missing: Vec<_> = input
        .iter()
        .filter(|(_, _, v, _)| {
            !seen.contains(
                serde_json::from_str::<serde_json::Value>(v).unwrap()["session_id"]
                    .as_str()
                    .unwrap(),
            )
        })
        .map(|(p, _, _, o)| format!("{p}@{o}"))
        .collect();
    if !missing.is_empty() {
        let warnings: Vec<String> = logs
            .iter()
            .flat_map(|l| {
                log_of(l)
                    .lines()
                    .filter(|l| {
                        l.contains("WARN")
                            || l.contains("ERROR")
                            || l.contains("assigned")
                            || l.contains("revoked")
                    })
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        panic!(
            "{} records lost, at input positions {:?}\nlogs:\n{}",
            missing.len(),
            missing,
            warnings.join("\n")
        );
    }
}

fn duplicates(read: &[Read]) -> usize {
    session_counts(read).values().map(|n| n - 1).sum()
}

#[test]
fn enrich_100k_records_topic_to_topic_exactly_and_in_order() {
    const N: usize = 100_000;
    let b = broker();
    let (input, output, group) = (unique("sessions"), unique("enriched"), unique("enrich"));
    create_topic(&b, &input, 4);
    create_topic(&b, &output, 4);
    // Keyed records with a sequence number, so per-key (hence per-partition) order is visible.
    let mut rng = mock::Rng::seeded(3);
    let records: Vec<_> = (0..N)
        .map(|i| {
            let session = mock::session(&mut rng, 1_700_000_000 + i as i64);
            (
                Some(format!("user-{}", i % 100)),
                format!("{{\"seq\":{i},{}", &session[1..]),
            )
        })
        .collect();
    produce(&b, &input, &records);

    let enrich = plugin("enrich");
    let out = run(
        &[
            "run",
            "--source",
            &source_uri(&b, &input, &group),
            "--plugin",
            enrich.to_str().unwrap(),
            "--sink",
            &sink_uri(&b, &output),
            "--count",
            &N.to_string(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let read = read_topic(
        &b,
        &output,
        N,
        Duration::from_secs(2),
        Duration::from_secs(120),
    );
    assert_eq!(read.len(), N, "exactly the input count arrives");
    let counts = session_counts(&read);
    assert_eq!(counts.len(), N);
    assert!(counts.values().all(|&n| n == 1));
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for (_, key, value, _) in &read {
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        let seq = v["seq"].as_i64().unwrap();
        let key = key.clone().expect("the key is kept");
        assert_eq!(key, format!("user-{}", seq % 100));
        assert!(v["country"].is_string() && v["status"].is_string(), "{v}");
        if let Some(prev) = last_seq.insert(key.clone(), seq) {
            assert!(
                prev < seq,
                "key {key}: seq {seq} after {prev}: per-partition order broken"
            );
        }
    }
}

fn enricher(b: &str, input: &str, output: &str, group: &str, log: &Path) -> Child {
    let enrich = plugin("enrich");
    spawn(
        &[
            "run",
            "--source",
            &source_uri(b, input, group),
            "--plugin",
            enrich.to_str().unwrap(),
            "--sink",
            &sink_uri(b, output),
        ],
        log,
    )
}

#[test]
fn kill_9_mid_stream_then_restart_loses_nothing() {
    let b = broker();
    let (input, output, group) = (unique("k9-in"), unique("k9-out"), unique("k9"));
    create_topic(&b, &input, 4);
    create_topic(&b, &output, 4);
    let dir = tempfile::tempdir().unwrap();
    // 20 s of feed: the kill comes about 5 s after the start.
    let mut generator = feed(&b, &input, 5_000, 100_000, 11, &dir.path().join("gen.log"));
    let first_log = dir.path().join("first.log");
    let mut first = enricher(&b, &input, &output, &group, &first_log);
    // Kill it mid-stream: once it holds its partitions (the join takes ~3 s) and has had a
    // moment to work, with records still coming.
    wait_for_log(&first_log, "partitions assigned");
    std::thread::sleep(Duration::from_millis(1500));
    assert_still_feeding(&mut generator, &dir.path().join("gen.log"));
    signal(&first, "-KILL");
    let _ = first.wait();

    let second_log = dir.path().join("second.log");
    let mut second = enricher(&b, &input, &output, &group, &second_log);
    let (inputs, read) = await_delivery(
        &b,
        &mut generator,
        &dir.path().join("gen.log"),
        &input,
        &output,
        100_000,
    );
    terminate(&mut second, &second_log);

    assert_nothing_lost(&inputs, &read, &[&first_log, &second_log]);
    eprintln!(
        "kill -9 test: 100000 records, {} duplicates re-read after the crash",
        duplicates(&read)
    );
}

/// The partition lists of the "partitions assigned" log lines.
fn assignments(log: &str) -> Vec<Vec<u32>> {
    log.lines()
        .filter(|l| l.contains("partitions assigned"))
        .filter_map(|l| {
            let list = l.split("partitions=[").nth(1)?.split(']').next()?;
            Some(
                list.split(", ")
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().expect("partition"))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn two_processes_split_partitions_and_one_takes_over_when_the_other_dies() {
    let b = broker();
    let (input, output, group) = (unique("pair-in"), unique("pair-out"), unique("pair"));
    create_topic(&b, &input, 8);
    create_topic(&b, &output, 8);
    let dir = tempfile::tempdir().unwrap();
    // 30 s of feed: the kill comes once both members hold partitions, about 10 s in.
    let mut generator = feed(&b, &input, 5_000, 150_000, 12, &dir.path().join("gen.log"));
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = enricher(&b, &input, &output, &group, &a_log);
    let mut b_proc = enricher(&b, &input, &output, &group, &b_log);

    // Wait until both hold part of the topic.
    let deadline = Instant::now() + Duration::from_secs(40);
    let split = loop {
        let (la, lb) = (assignments(&log_of(&a_log)), assignments(&log_of(&b_log)));
        if let (Some(pa), Some(pb)) = (la.last(), lb.last()) {
            if !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 8 {
                break (pa.clone(), pb.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "partitions were never split:\nA:\n{}\nB:\n{}",
            log_of(&a_log),
            log_of(&b_log)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let all: HashSet<u32> = split.0.iter().chain(&split.1).copied().collect();
    assert_eq!(all.len(), 8, "A {:?} and B {:?} overlap", split.0, split.1);

    std::thread::sleep(Duration::from_secs(1));
    assert_still_feeding(&mut generator, &dir.path().join("gen.log"));
    signal(&a, "-KILL");
    let _ = a.wait();
    let (inputs, read) = await_delivery(
        &b,
        &mut generator,
        &dir.path().join("gen.log"),
        &input,
        &output,
        150_000,
    );
    terminate(&mut b_proc, &b_log);

    assert_nothing_lost(&inputs, &read, &[&a_log, &b_log]);
    assert!(
        assignments(&log_of(&b_log)).iter().any(|p| p.len() == 8),
        "B never took over all partitions:\n{}",
        log_of(&b_log)
    );
    eprintln!(
        "takeover test: split {:?} / {:?}; {} duplicates",
        split.0,
        split.1,
        duplicates(&read)
    );
}

#[test]
fn the_runtime_recovers_by_itself_after_the_broker_pauses() {
    let broker = PrivateBroker::start();
    let b = broker.addr.clone();
    let (input, output, group) = (unique("pause-in"), unique("pause-out"), unique("pause"));
    create_topic(&b, &input, 2);
    create_topic(&b, &output, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut generator = feed(&b, &input, 10_000, 100_000, 13, &dir.path().join("gen.log"));
    let log = dir.path().join("enrich.log");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let enrich_wasm = plugin("enrich");
    let mut enrich = spawn(
        &[
            "run",
            "--source",
            &source_uri(&b, &input, &group),
            "--plugin",
            enrich_wasm.to_str().unwrap(),
            "--sink",
            &sink_uri(&b, &output),
            "--metrics",
            &metrics,
        ],
        &log,
    );
    // Records the sink has acknowledged, from /metrics.
    let delivered = || -> f64 {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "2",
                &format!("http://{metrics}/metrics"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("sluice_records_out_total{pipeline=\"main\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    wait_for_log(&log, "partitions assigned");
    std::thread::sleep(Duration::from_secs(1)); // records flowing, then the broker freezes
    broker.signal("-STOP");
    std::thread::sleep(Duration::from_secs(10));
    let before = delivered();
    broker.signal("-CONT");
    let resumed = Instant::now();
    // Time to recover: from SIGCONT to the first record delivered after it. A pause longer than
    // session.timeout.ms (6 s here) costs the group its assignment and a rejoin; a shorter one
    // (measured with 15 s) resumes within ~50 ms.
    while delivered() <= before && resumed.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_delivery = resumed.elapsed();

    let (inputs, read) = await_delivery(
        &b,
        &mut generator,
        &dir.path().join("gen.log"),
        &input,
        &output,
        100_000,
    );
    let recovered = resumed.elapsed();
    terminate(&mut enrich, &log);
    assert_nothing_lost(&inputs, &read, &[&log]);
    eprintln!(
        "broker pause test: first delivery {first_delivery:?} after SIGCONT, all 100000 through {recovered:?} after it (the generator feeds 10 000/s); {} duplicates",
        duplicates(&read)
    );
}

#[test]
fn a_non_json_value_stops_the_pipeline_or_is_skipped() {
    let b = broker();
    let (input, out_fail, out_skip) = (unique("bad-in"), unique("bad-out1"), unique("bad-out2"));
    create_topic(&b, &input, 1);
    create_topic(&b, &out_fail, 1);
    create_topic(&b, &out_skip, 1);
    let mut rng = mock::Rng::seeded(4);
    let mut records: Vec<_> = (0..6)
        .map(|_| (None, mock::session(&mut rng, 1_700_000_000)))
        .collect();
    records.insert(3, (None, "this is not json".to_string()));
    produce(&b, &input, &records);
    let enrich = plugin("enrich");

    let out = run(
        &[
            "run",
            "--source",
            &source_uri(&b, &input, &unique("g")),
            "--plugin",
            enrich.to_str().unwrap(),
            "--sink",
            &sink_uri(&b, &out_fail),
        ],
        b"",
    );
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(
        line.contains(&format!("record {input}/0@3")) && line.contains("not a JSON object"),
        "{line}"
    );
    assert_eq!(
        read_topic(
            &b,
            &out_fail,
            3,
            Duration::from_secs(1),
            Duration::from_secs(20)
        )
        .len(),
        3
    );

    let out = run(
        &[
            "run",
            "--source",
            &source_uri(&b, &input, &unique("g")),
            "--plugin",
            enrich.to_str().unwrap(),
            "--sink",
            &sink_uri(&b, &out_skip),
            "--on-error",
            "skip",
            "--count",
            "7",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("skipped record {input}/0@3")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        read_topic(
            &b,
            &out_skip,
            6,
            Duration::from_secs(1),
            Duration::from_secs(20)
        )
        .len(),
        6
    );
}

#[test]
fn bad_kafka_endpoints_get_clear_errors() {
    let b = broker();
    let missing = format!("kafka://{b}/{}?group=g", unique("no-such-topic"));
    let out = run(&["run", "--source", &missing], b"");
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(
        line.contains("does not exist") && line.contains(&missing),
        "{line}"
    );

    let topic = unique("nogroup");
    create_topic(&b, &topic, 1);
    let out = run(&["run", "--source", &format!("kafka://{b}/{topic}")], b"");
    assert!(
        error_line(&out).contains("needs a consumer group: add ?group=NAME"),
        "{}",
        stderr(&out)
    );

    let out = run(&["run", "--sink", "kafka://nowhere/topic"], b"");
    assert!(
        error_line(&out).contains("bad Kafka URI `kafka://nowhere/topic`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_broker_is_retried_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again
    let mut child = spawn(
        &[
            "run",
            "--source",
            &format!("kafka://127.0.0.1:{port}/t?group=g"),
        ],
        &log,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_of(&log).contains("not reachable") {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited instead of retrying:\n{}",
            log_of(&log)
        );
        assert!(
            Instant::now() < deadline,
            "no retry message:\n{}",
            log_of(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(log_of(&log).contains("retrying"));
    terminate(&mut child, &log);
}

#[test]
fn a_restart_resumes_right_after_the_last_acknowledged_record() {
    let b = broker();
    let (topic, group) = (unique("resume"), unique("resume"));
    create_topic(&b, &topic, 1);
    produce(
        &b,
        &topic,
        &(0..10).map(|i| (None, i.to_string())).collect::<Vec<_>>(),
    );
    let uri = source_uri(&b, &topic, &group);
    let first = run(&["run", "--source", &uri, "--count", "5"], b"");
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first), "0\n1\n2\n3\n4\n");
    let second = run(&["run", "--source", &uri, "--count", "3"], b"");
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        stdout(&second),
        "5\n6\n7\n",
        "neither a gap nor a repeat after a clean stop"
    );
}

#[test]
fn key_headers_and_timestamp_survive_the_plugin() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let b = broker();
    let (input, output) = (unique("meta-in"), unique("meta-out"));
    create_topic(&b, &input, 1);
    create_topic(&b, &output, 1);
    let session = mock::session(&mut mock::Rng::seeded(5), 1_700_000_000);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "source-object",
            value: Some("raw/2026/11/25/a.parquet"),
        })
        .insert(Header {
            key: "trace",
            value: Some(&[0u8, 1, 2][..]),
        });
    producer
        .send(
            BaseRecord::to(&input)
                .key("user-7")
                .payload(&session)
                .headers(headers)
                .timestamp(1_700_000_000_123),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let enrich = plugin("enrich");
    let out = run(
        &[
            "run",
            "--source",
            &source_uri(&b, &input, &unique("g")),
            "--plugin",
            enrich.to_str().unwrap(),
            "--sink",
            &sink_uri(&b, &output),
            "--count",
            "1",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", unique("check"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[&output]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            break m.unwrap();
        }
        assert!(Instant::now() < deadline, "nothing arrived in {output}");
    };
    assert_eq!(m.key(), Some(&b"user-7"[..]));
    assert_eq!(m.timestamp().to_millis(), Some(1_700_000_000_123));
    let hs = m.headers().expect("headers kept");
    let got: Vec<(String, Vec<u8>)> = hs
        .iter()
        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "source-object".to_string(),
                b"raw/2026/11/25/a.parquet".to_vec()
            ),
            ("trace".to_string(), vec![0, 1, 2])
        ]
    );
    let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    assert!(v["country"].is_string(), "{v}");
}
