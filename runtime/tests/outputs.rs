//! Named outputs: a plugin routes records (`to_output("NAME")`) to the sink the pipeline maps
//! NAME to. Through a local directory, a Kafka topic and a bucket, with kill -9 mid-stream.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::kafka::*;
use common::process::*;
use common::{plugin, run, s3, stderr, stdout};
use serde_json::Value;

#[test]
fn a_routed_record_goes_to_its_output_and_the_rest_to_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let testkit = plugin("testkit");
    let out = run(
        &[
            "run",
            "--plugin",
            testkit.to_str().unwrap(),
            "--output",
            &format!("elsewhere=file://{}?format=jsonl", dir.path().display()),
        ],
        b"1\n\"ROUTE\"\n2\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n2\n");
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), "\"ROUTE\"\n");
}

#[test]
fn outputs_are_checked_before_anything_runs() {
    let testkit = plugin("testkit");
    let testkit = testkit.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["--output", "bad name=stdout"],
            "output name `bad name`: use letters, digits",
        ),
        (
            vec!["--output", "a=stdout", "--output", "a=stdout"],
            "output `a` is given twice",
        ),
        (
            vec!["--output", "a=nowhere://x"],
            "output `a`: unsupported sink `nowhere://x`",
        ),
    ] {
        let mut all = vec!["run", "--plugin", testkit];
        all.extend(args);
        let out = run(&all, b"1\n");
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
    }
}

/// The enricher, routing rejected sessions to the output `rejected`.
fn router(source: &str, sink: &str, rejected: &str, log: &Path) -> std::process::Child {
    let enrich = plugin("enrich");
    spawn_with(
        s3::with_credentials(&mut common::runtime()),
        &[
            "run",
            "--source",
            source,
            "--plugin",
            enrich.to_str().unwrap(),
            "--set",
            "rejected_output=rejected",
            "--sink",
            sink,
            "--output",
            &format!("rejected={rejected}"),
        ],
        log,
    )
}

/// Waits for the feed to end; returns the session ids it wrote.
fn fed(
    b: &str,
    topic: &str,
    n: usize,
    mut feed: std::process::Child,
    dir: &Path,
) -> HashSet<String> {
    let log = dir.join("gen.log");
    assert!(wait_exit(&mut feed, Duration::from_secs(90), &log).success());
    let read = read_topic(b, topic, n, Duration::from_secs(1), Duration::from_secs(60));
    let ids: HashSet<String> = session_counts(&read).into_keys().collect();
    assert_eq!(ids.len(), n);
    ids
}

/// Starts the router, kills it with -9 once it is working, and starts it again.
fn kill_9_once(
    source: &str,
    sink: &str,
    rejected: &str,
    dir: &Path,
    feed: &mut std::process::Child,
) -> std::process::Child {
    let first_log = dir.join("first.log");
    let mut first = router(source, sink, rejected, &first_log);
    wait_for_log(&first_log, "partitions assigned");
    std::thread::sleep(Duration::from_millis(1500));
    assert_still_feeding(feed, &dir.join("gen.log"));
    signal(&first, "-KILL");
    let _ = first.wait();
    router(source, sink, rejected, &dir.join("second.log"))
}

/// Each session with its status, checking that every status went to the right place.
fn statuses(rows: &[Value], status: &str) -> Vec<String> {
    rows.iter()
        .map(|r| {
            assert_eq!(r["status"], status, "{r}");
            r["session_id"].as_str().expect("session_id").to_owned()
        })
        .collect()
}

/// Every input session is in exactly one of the two outputs at least once; reports duplicates.
fn assert_all_routed(input: &HashSet<String>, accepted: &[String], rejected: &[String]) {
    let seen: HashSet<&String> = accepted.iter().chain(rejected).collect();
    let lost = input.iter().filter(|id| !seen.contains(id)).count();
    assert_eq!(lost, 0, "{lost} sessions lost");
    let (a, r): (HashSet<&String>, HashSet<&String>) =
        (accepted.iter().collect(), rejected.iter().collect());
    assert!(a.is_disjoint(&r), "a session went to both outputs");
    assert!(!a.is_empty() && !r.is_empty(), "both outputs got sessions");
    eprintln!(
        "named outputs: {} sessions, {} accepted, {} rejected, {} duplicates after kill -9",
        input.len(),
        a.len(),
        r.len(),
        accepted.len() + rejected.len() - input.len()
    );
}

/// Feeds `n` sessions into a fresh 4-partition topic while the router runs with `sink` and
/// `rejected` as outputs, kill -9 once mid-stream; then, once `read` (accepted, rejected) holds
/// them all, checks that every session went to the right place and none was lost.
fn route_through_a_kill_9(
    n: usize,
    sink: &str,
    rejected: &str,
    read: impl Fn() -> (Vec<Value>, Vec<Value>),
) {
    let b = broker();
    let input = unique("routed-in");
    create_topic(&b, &input, 4);
    let dir = tempfile::tempdir().unwrap();
    // At least 12 s of feed: the kill comes about 5 s after the start.
    let rate = (n as u32 / 12).min(10_000);
    let mut generator = feed(&b, &input, rate, n as u32, 21, &dir.path().join("gen.log"));
    let source = source_uri(&b, &input, &unique("router"));
    let mut second = kill_9_once(&source, sink, rejected, dir.path(), &mut generator);
    let ids = fed(&b, &input, n, generator, dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (ok, rej) = loop {
        let (ok, rej) = read();
        if ok.len() + rej.len() >= n || std::time::Instant::now() > deadline {
            break (ok, rej);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    terminate(&mut second, &dir.path().join("second.log"));
    assert_all_routed(
        &ids,
        &statuses(&ok, "accepted"),
        &statuses(&rej, "rejected"),
    );
}

#[test]
fn rejected_sessions_get_their_own_topic_and_a_kill_9_loses_nothing() {
    let b = broker();
    let (accepted, rejected) = (unique("out-ok"), unique("out-rej"));
    for t in [&accepted, &rejected] {
        create_topic(&b, t, 4);
    }
    let read = |t: &str| {
        read_topic(&b, t, 1, Duration::from_secs(1), Duration::from_secs(20))
            .into_iter()
            .map(|(_, _, v, _)| serde_json::from_str::<Value>(&v).unwrap())
            .collect::<Vec<_>>()
    };
    route_through_a_kill_9(
        100_000,
        &sink_uri(&b, &accepted),
        &sink_uri(&b, &rejected),
        || (read(&accepted), read(&rejected)),
    );
}

/// Every row under `prefix` of the test bucket, read by pyarrow.
fn pyarrow_rows(prefix: &str) -> Vec<Value> {
    let script = r#"
import json, sys
import pyarrow.fs as fs, pyarrow.parquet as pq
s3 = fs.S3FileSystem(access_key="admin", secret_key="password", region="us-east-1",
                     endpoint_override=sys.argv[1], scheme="http")
infos = s3.get_file_info(fs.FileSelector(sys.argv[2], recursive=True, allow_not_found=True))
rows = []
for f in sorted(i.path for i in infos if i.path.endswith(".parquet")):
    rows.extend(pq.read_table(f, filesystem=s3).to_pylist())
print(json.dumps(rows))
"#;
    let bucket_prefix = format!("{}/{prefix}", s3::BUCKET);
    s3::pyarrow(script, &[&s3::server(), &bucket_prefix])
}

#[test]
fn rejected_sessions_get_their_own_prefix_and_a_kill_9_loses_nothing() {
    let prefix = unique("routed");
    let (ok_prefix, rej_prefix) = (format!("{prefix}/accepted"), format!("{prefix}/rejected"));
    let bucket = |p: &str| s3::uri(&s3::server(), p, "format=parquet&roll=1s");
    route_through_a_kill_9(60_000, &bucket(&ok_prefix), &bucket(&rej_prefix), || {
        (pyarrow_rows(&ok_prefix), pyarrow_rows(&rej_prefix))
    });
}
