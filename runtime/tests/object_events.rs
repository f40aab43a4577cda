//! Bucket ingestion scaled out through object-created events, end to end on the real broker and
//! S3 server: the `list=events` lister publishing what a bucket holds, three `runtime`
//! processes in one consumer group sharing the objects (one killed with -9 mid-stream), and
//! live events in MinIO's format, including malformed ones, deletes, a missing object and keys
//! that are not the source's.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::kafka::{self, create_topic, header, read_topic, read_topic_with, unique};
use common::process::{free_addr, http_get, log_of, signal, spawn_with, terminate, wait_for_log};
use common::s3::{self, with_credentials};
use common::{plugin, runtime, stderr};
use rdkafka::Message;

const OBJECTS: u64 = 200;
const ROWS: u64 = 500;

/// `objects` Parquet objects of `ROWS` mock sessions each under `PREFIX/in`.
fn fill_bucket(server: &str, prefix: &str, objects: u64) {
    let sink = s3::uri(
        server,
        &format!("{prefix}/in"),
        &format!("format=parquet&roll_records={ROWS}"),
    );
    let out = with_credentials(&mut runtime())
        .args(["run", "--plugin", plugin("mock").to_str().unwrap()])
        .args(["--rate", "0", "--count", &(objects * ROWS).to_string()])
        .args(["--batch-size", &ROWS.to_string(), "--sink", &sink])
        .stdin(Stdio::null())
        .output()
        .expect("runtime runs");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The lister: every object under `PREFIX/in` not published before, as an event.
fn publish_events(server: &str, prefix: &str, broker: &str, topic: &str) -> String {
    let source = s3::uri(
        server,
        &format!("{prefix}/in"),
        "format=parquet&list=events&follow=false",
    );
    let out = with_credentials(&mut runtime())
        .args([
            "run",
            "--source",
            &source,
            "--sink",
            &kafka::sink_uri(broker, topic),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("runtime runs");
    assert!(out.status.success(), "{}", stderr(&out));
    stderr(&out)
}

/// A `runtime` reading the objects named by events, writing their rows to a topic of its own
/// (so the test can tell who read what).
struct Member {
    child: Child,
    log: PathBuf,
    metrics: String,
    rows: String,
}

impl Member {
    fn start(dir: &Path, n: usize, source: &str, broker: &str, rows: &str, extra: &[&str]) -> Self {
        let log = dir.join(format!("member-{n}.log"));
        let metrics = free_addr();
        let sink = kafka::sink_uri(broker, rows);
        let mut args = vec![
            "run",
            "--source",
            source,
            "--sink",
            &sink,
            "--metrics",
            &metrics,
        ];
        args.extend_from_slice(extra);
        let child = spawn_with(with_credentials(&mut runtime()), &args, &log);
        Member {
            child,
            log,
            metrics,
            rows: rows.to_owned(),
        }
    }

    fn metric(&self, name: &str) -> u64 {
        let (_, text) = http_get(&self.metrics, "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    }

    fn records_out(&self) -> u64 {
        self.metric("sluice_records_out_total{pipeline=\"main\"}")
    }

    /// The partitions of the events topic it holds, by its last assignment.
    fn assigned(&self) -> Option<usize> {
        let log = log_of(&self.log);
        let line = log.lines().rfind(|l| l.contains("partitions assigned"))?;
        let list = line.split("partitions=[").nth(1)?.split(']').next()?;
        Some(list.split(',').filter(|p| !p.trim().is_empty()).count())
    }
}

/// Every member's log, for a failure message.
fn logs(members: &[Member]) -> String {
    let logs: Vec<String> = members.iter().map(|m| log_of(&m.log)).collect();
    logs.join("\n---\n")
}

/// Waits until the members together hold all `partitions` (the group is settled).
fn wait_settled(members: &[Member], partitions: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: Vec<Option<usize>> = members.iter().map(Member::assigned).collect();
        if held.iter().all(Option::is_some) && held.iter().flatten().sum::<usize>() == partitions {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle: {held:?}; logs:\n{}",
            logs(members)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Rows read back from each member's topic: (object key, session id) in order.
fn rows_of(broker: &str, members: &[Member], expected: usize) -> Vec<Vec<(String, String)>> {
    members
        .iter()
        .map(|m| {
            read_topic(
                broker,
                &m.rows,
                expected,
                Duration::from_secs(1),
                Duration::from_secs(30),
            )
            .into_iter()
            .map(|(_, key, value, _)| {
                let v: serde_json::Value = serde_json::from_str(&value).expect("JSON row");
                let id = v["session_id"].as_str().expect("session_id").to_owned();
                (key.expect("rows are keyed by their object"), id)
            })
            .collect()
        })
        .collect()
}

/// Per member: rows and distinct objects; and objects read by more than one member.
fn split(rows: &[Vec<(String, String)>]) -> (Vec<(usize, usize)>, usize) {
    let objects: Vec<HashSet<&str>> = rows
        .iter()
        .map(|r| r.iter().map(|(k, _)| k.as_str()).collect())
        .collect();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for o in &objects {
        for k in o {
            *readers.entry(k).or_default() += 1;
        }
    }
    let shared = readers.values().filter(|n| **n > 1).count();
    let per_member = rows
        .iter()
        .zip(&objects)
        .map(|(r, o)| (r.len(), o.len()))
        .collect();
    (per_member, shared)
}

struct Setup {
    dir: tempfile::TempDir,
    server: String,
    broker: String,
    prefix: String,
    events: String,
}

fn setup(name: &str, partitions: u32) -> Setup {
    let (server, broker) = (s3::server(), kafka::broker());
    let prefix = unique(name);
    let events = format!("{prefix}-events");
    create_topic(&broker, &events, partitions);
    Setup {
        dir: tempfile::tempdir().unwrap(),
        server,
        broker,
        prefix,
        events,
    }
}

impl Setup {
    fn source(&self, group: &str, format: &str) -> String {
        s3::uri(
            &self.server,
            &format!("{}/in", self.prefix),
            &format!(
                "format={format}&events=kafka://{}/{}&group={group}&prop.session.timeout.ms=6000",
                self.broker, self.events
            ),
        )
    }

    /// `n` members of a new group (a group name no earlier run on this broker used).
    fn members(&self, n: usize, group: &str) -> Vec<Member> {
        let group = unique(group);
        (0..n)
            .map(|i| {
                let rows = format!("{}-rows-{i}", self.prefix);
                create_topic(&self.broker, &rows, 2);
                let source = self.source(&group, "parquet");
                Member::start(self.dir.path(), i, &source, &self.broker, &rows, &[])
            })
            .collect()
    }
}

fn wait_records_out(members: &[Member], at_least: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out: u64 = members.iter().map(Member::records_out).sum();
        if out >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{out} of {at_least} rows out after {timeout:?}; logs:\n{}",
            logs(members)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_processes_share_a_bucket_through_object_events() {
    let s = setup("events-split", 6);
    fill_bucket(&s.server, &s.prefix, OBJECTS);
    let mut members = s.members(3, "split");
    wait_settled(&members, 6);
    publish_events(&s.server, &s.prefix, &s.broker, &s.events);
    wait_records_out(&members, OBJECTS * ROWS, Duration::from_secs(120));
    for m in &mut members {
        terminate(&mut m.child, &m.log);
    }

    let rows = rows_of(&s.broker, &members, 1);
    let ids: HashSet<&str> = rows.iter().flatten().map(|(_, id)| id.as_str()).collect();
    let total: usize = rows.iter().map(Vec::len).sum();
    let (per_member, shared) = split(&rows);
    eprintln!("split (rows, objects) per process: {per_member:?}; objects read twice: {shared}");
    assert_eq!(ids.len() as u64, OBJECTS * ROWS, "every row reaches a sink");
    assert_eq!(total as u64, OBJECTS * ROWS, "no row twice");
    assert_eq!(shared, 0, "no object read by two processes");
    assert!(
        per_member.iter().all(|(_, objects)| *objects > 0),
        "{per_member:?}"
    );
    let objects: usize = per_member.iter().map(|(_, o)| o).sum();
    assert_eq!(objects as u64, OBJECTS);

    // The lister's events: MinIO's format, keyed bucket/key; a second run publishes nothing.
    let events = read_topic_with(
        &s.broker,
        &s.events,
        OBJECTS as usize,
        Duration::from_millis(500),
        Duration::from_secs(30),
        |m| {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON event");
            (key, value)
        },
    );
    assert_eq!(events.len() as u64, OBJECTS);
    for (key, value) in &events {
        assert!(
            key.starts_with(&format!("{}/{}/in/", s3::BUCKET, s.prefix)),
            "{key}"
        );
        assert_eq!(value["Key"], key.as_str());
        let record = &value["Records"][0];
        assert_eq!(record["eventName"], "s3:ObjectCreated:Put");
        assert_eq!(record["s3"]["bucket"]["name"], s3::BUCKET);
        assert!(record["s3"]["object"]["size"].as_u64().unwrap() > 0);
        assert!(record["s3"]["object"]["eTag"]
            .as_str()
            .is_some_and(|e| !e.is_empty()));
    }
    let again = publish_events(&s.server, &s.prefix, &s.broker, &s.events);
    assert!(again.contains("records_in=0"), "{again}");
}

#[test]
fn a_member_killed_mid_stream_loses_no_row() {
    let s = setup("events-kill", 6);
    fill_bucket(&s.server, &s.prefix, OBJECTS);
    let mut members = s.members(3, "kill");
    wait_settled(&members, 6);
    publish_events(&s.server, &s.prefix, &s.broker, &s.events);
    wait_records_out(&members, OBJECTS * ROWS / 4, Duration::from_secs(120));
    signal(&members[0].child, "-KILL");
    let _ = members[0].child.wait();
    eprintln!(
        "killed member 0 after {} rows out in all",
        members[1..].iter().map(Member::records_out).sum::<u64>()
    );

    // The survivors take over its partitions (after the session timeout) and finish.
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = rows_of(&s.broker, &members, 0);
        let ids: HashSet<&str> = rows.iter().flatten().map(|(_, id)| id.as_str()).collect();
        if ids.len() as u64 == OBJECTS * ROWS {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} rows after the kill",
            ids.len(),
            OBJECTS * ROWS
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    for m in &mut members[1..] {
        terminate(&mut m.child, &m.log);
    }
    let rows = {
        // Read again after the clean exits: nothing more may have arrived that is lost.
        let after = rows_of(&s.broker, &members, 0);
        if after.iter().map(Vec::len).sum::<usize>() >= rows.iter().map(Vec::len).sum() {
            after
        } else {
            rows
        }
    };
    let mut seen: HashMap<&str, (usize, &str)> = HashMap::new();
    for (key, id) in rows.iter().flatten() {
        seen.entry(id).or_insert((0, key)).0 += 1;
    }
    let duplicated_rows: usize = seen.values().map(|(n, _)| n - 1).sum();
    let duplicated_objects: HashSet<&str> = seen
        .values()
        .filter(|(n, _)| *n > 1)
        .map(|(_, k)| *k)
        .collect();
    let (per_member, shared) = split(&rows);
    eprintln!(
        "after kill -9: (rows, objects) per process {per_member:?}; objects read twice: {shared}; \
         duplicate rows: {duplicated_rows} in {} objects",
        duplicated_objects.len()
    );
    assert_eq!(seen.len() as u64, OBJECTS * ROWS, "0 rows lost");
    // Duplicates only from objects in flight at the kill (or done in its last 100 ms, whose
    // event offsets were not committed yet), each read again by the member taking over.
    let by_member: Vec<HashSet<&str>> = rows
        .iter()
        .map(|r| r.iter().map(|(k, _)| k.as_str()).collect())
        .collect();
    for object in &duplicated_objects {
        assert!(
            by_member[0].contains(object) && by_member[1..].iter().any(|m| m.contains(object)),
            "{object} has duplicate rows but was not in flight at the kill"
        );
    }
    assert!(shared <= 40, "{shared} objects read twice");
}

/// An object-created event as MinIO's Kafka target sends it.
fn minio_event(name: &str, bucket: &str, key: &str, etag: &str) -> (Option<String>, String) {
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let value = serde_json::json!({
        "EventName": name,
        "Key": format!("{bucket}/{key}"),
        "Records": [{
            "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
            "eventTime": "2026-12-03T10:00:00.000Z", "eventName": name,
            "userIdentity": {"principalId": "admin"},
            "requestParameters": {"principalId": "admin", "region": "", "sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "17F", "x-minio-origin-endpoint": "http://127.0.0.1:9000"},
            "s3": {
                "s3SchemaVersion": "1.0", "configurationId": "Config",
                "bucket": {"name": bucket, "ownerIdentity": {"principalId": "admin"}, "arn": format!("arn:aws:s3:::{bucket}")},
                "object": {"key": encoded, "size": 100, "eTag": etag, "contentType": "application/x-ndjson", "userMetadata": {}, "sequencer": "17F"}
            },
            "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64)"}
        }]
    });
    (Some(format!("{bucket}/{key}")), value.to_string())
}

fn put_lines(server: &str, dir: &Path, key: &str, ids: &[&str]) {
    let file = dir.join("object.jsonl");
    let lines: Vec<String> = ids
        .iter()
        .map(|id| format!(r#"{{"session_id":"{id}"}}"#))
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    s3::put(server, &key.replace(' ', "%20").replace('+', "%2B"), &file);
}

#[test]
fn live_events_in_minio_format_and_bad_events_are_handled_one_by_one() {
    let s = setup("events-live", 1);
    let rows = format!("{}-rows", s.prefix);
    let dlq = format!("{}-dlq", s.prefix);
    create_topic(&s.broker, &rows, 1);
    create_topic(&s.broker, &dlq, 1);
    let dlq_uri = kafka::sink_uri(&s.broker, &dlq);
    let mut member = Member::start(
        s.dir.path(),
        0,
        &s.source(&unique("live"), "jsonl"),
        &s.broker,
        &rows,
        &["--on-error", "dlq", "--dlq", &dlq_uri],
    );
    wait_for_log(&member.log, "partitions assigned");

    // A new object (a space and a `+` in its name, as MinIO escapes them), then its event.
    let a = format!("{}/in/live one+a.jsonl", s.prefix);
    put_lines(&s.server, s.dir.path(), &a, &["a1", "a2", "a3"]);
    let created = "s3:ObjectCreated:Put";
    let published = Instant::now();
    kafka::produce(
        &s.broker,
        &s.events,
        &[minio_event(created, s3::BUCKET, &a, "\"e1\"")],
    );
    let got = read_topic(&s.broker, &rows, 3, Duration::ZERO, Duration::from_secs(30));
    eprintln!(
        "a new object's rows downstream {:?} after its event",
        published.elapsed()
    );
    assert_eq!(
        got.len(),
        3,
        "the new object was picked up: {}",
        log_of(&member.log)
    );
    assert_eq!(got[0].1.as_deref(), Some(a.as_str()));

    // The rest goes on past each of these.
    let b = format!("{}/in/b.jsonl", s.prefix);
    put_lines(&s.server, s.dir.path(), &b, &["b1", "b2"]);
    kafka::produce(
        &s.broker,
        &s.events,
        &[
            (None, "this is not an event".to_owned()),
            minio_event("s3:ObjectRemoved:Delete", s3::BUCKET, &a, ""),
            minio_event(
                created,
                s3::BUCKET,
                &format!("{}/in/gone.jsonl", s.prefix),
                "\"e2\"",
            ),
            minio_event(
                created,
                s3::BUCKET,
                &format!("{}/elsewhere/x.jsonl", s.prefix),
                "\"e3\"",
            ),
            minio_event(
                created,
                s3::BUCKET,
                &format!("{}/in/_sluice/x.jsonl", s.prefix),
                "\"e4\"",
            ),
            minio_event(created, "another-bucket", &a, "\"e1\""),
            minio_event(created, s3::BUCKET, &a, "\"e1\""), // repeated: same object, same eTag
            minio_event(created, s3::BUCKET, &b, "\"e5\""),
        ],
    );
    let got = read_topic(
        &s.broker,
        &rows,
        5,
        Duration::from_secs(2),
        Duration::from_secs(30),
    );
    let ids: Vec<String> = got
        .iter()
        .map(|(_, _, v, _)| {
            serde_json::from_str::<serde_json::Value>(v).unwrap()["session_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        ids,
        ["a1", "a2", "a3", "b1", "b2"],
        "{}",
        log_of(&member.log)
    );

    // The malformed event is a dead letter, unchanged, with the reason.
    let letters = read_topic_with(
        &s.broker,
        &dlq,
        1,
        Duration::from_millis(500),
        Duration::from_secs(30),
        |m| {
            (
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                header(m, "sluice-error").unwrap_or_default(),
            )
        },
    );
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, "this is not an event");
    assert!(
        letters[0].1.contains("S3 bucket notification"),
        "{}",
        letters[0].1
    );

    let outcome = |o: &str| {
        member.metric(&format!(
            "sluice_object_events_total{{uri=\"s3://{}/{}/in\",outcome=\"{o}\"}}",
            s3::BUCKET,
            s.prefix
        ))
    };
    let counts: Vec<(&str, u64)> = ["read", "repeated", "ignored", "missing", "malformed"]
        .into_iter()
        .map(|o| (o, outcome(o)))
        .collect();
    assert_eq!(
        counts,
        [
            ("read", 2),
            ("repeated", 1),
            ("ignored", 4),
            ("missing", 1),
            ("malformed", 1)
        ]
    );
    let log = log_of(&member.log);
    assert!(
        log.contains("an event names an object that is gone"),
        "{log}"
    );
    assert!(
        member.child.try_wait().unwrap().is_none(),
        "still running: {log}"
    );
    terminate(&mut member.child, &member.log);
}

/// examples/ingest.toml (the stack's producer scaled out), with only its endpoints changed.
#[test]
fn the_scaled_out_producer_example_reads_objects_named_by_events() {
    let s = setup("events-example", 2);
    fill_bucket(&s.server, &s.prefix, 6);
    let sessions = format!("{}-sessions", s.prefix);
    create_topic(&s.broker, &sessions, 2);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = common::target_dir().join("wasm32-wasip2/release");
    let example = std::fs::read_to_string(repo.join("examples/ingest.toml"))
        .unwrap()
        .replace("../target/wasm32-wasip2/release", plugins.to_str().unwrap());
    let config = s.dir.path().join("ingest.toml");
    std::fs::write(&config, example).unwrap();
    let log = s.dir.path().join("ingest.log");
    let raw_objects = s.source(&unique("producer"), "parquet");
    let user_sessions = kafka::sink_uri(&s.broker, &sessions);
    let mut child = spawn_with(
        with_credentials(&mut runtime())
            .env("SLUICE_ENDPOINT_RAW_OBJECTS", &raw_objects)
            .env("SLUICE_ENDPOINT_USER_SESSIONS", &user_sessions),
        &["run", "--config", config.to_str().unwrap()],
        &log,
    );
    wait_for_log(&log, "partitions assigned");
    publish_events(&s.server, &s.prefix, &s.broker, &s.events);
    let rows = 6 * ROWS as usize;
    let got = read_topic_with(
        &s.broker,
        &sessions,
        rows,
        Duration::from_secs(1),
        Duration::from_secs(60),
        |m| {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            (key, value)
        },
    );
    terminate(&mut child, &log);
    assert_eq!(got.len(), rows, "{}", log_of(&log));
    // The producer plugin keys each session by its user.
    for (key, value) in &got {
        assert_eq!(value["user_id"].to_string().trim_matches('"'), key.as_str());
    }
}

#[test]
fn bad_event_settings_are_named() {
    for (source, why) in [
        (
            "s3://b/p?events=kafka://127.0.0.1:9092/t?group=g",
            "group=NAME",
        ),
        (
            "s3://b/p?events=http://127.0.0.1:9092/t",
            "events=kafka://HOST:PORT/TOPIC",
        ),
        ("file:///tmp/x?list=events", "use an s3:// URI"),
        ("s3://b/p?list=everything", "use list=events"),
    ] {
        let out = runtime()
            .args(["run", "--source", source])
            .stdin(Stdio::null())
            .output()
            .expect("runtime runs");
        assert!(!out.status.success());
        assert!(stderr(&out).contains(why), "{source}: {}", stderr(&out));
    }
    let out = with_credentials(&mut runtime())
        .args(["run", "--source", "stdin", "--sink"])
        .arg(s3::uri(&s3::server(), "x", "list=events"))
        .stdin(Stdio::null())
        .output()
        .expect("runtime runs");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("are for sources"), "{}", stderr(&out));
}
