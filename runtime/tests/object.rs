//! Object storage end to end, through the real binary: local directories, a real S3 server
//! (SeaweedFS from scripts/s3.sh), pyarrow-written and pyarrow-read Parquet, the producer into a
//! real Kafka-protocol broker, an S3 outage, bad objects, and the whole stack from
//! examples/stack.toml.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::{self, create_topic, header, read_topic_with, unique};
use common::s3::{self, with_credentials};
use common::{error_line, json_lines, plugin, runtime, stderr, stdout};

use serde_json::Value;

/// Runs the runtime (with S3 credentials) to the end.
fn run(args: &[&str]) -> std::process::Output {
    with_credentials(&mut runtime())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runtime runs")
}

/// Runs the runtime (with S3 credentials) with `input` on stdin.
fn run_with_input(args: &[&str], input: &[u8]) -> std::process::Output {
    common::run_with(with_credentials(&mut runtime()).args(args), input)
}

/// Session ids, each with how often it occurs (mock timestamps follow the clock, ids do not).
fn ids(rows: &[Value]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in rows {
        *out.entry(r["session_id"].as_str().expect("session_id").to_owned())
            .or_insert(0) += 1;
    }
    out
}

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "runtime failed:\n{}", stderr(out));
}

/// `count` mock sessions with this seed, as the generator writes them.
fn mock_sessions(seed: u64, count: u64) -> Vec<Value> {
    json_lines(&stdout(&generate(seed, count, "stdout")))
}

/// Writes those sessions to `sink` through the runtime.
fn generate(seed: u64, count: u64, sink: &str) -> std::process::Output {
    let out = run(&[
        "run",
        "--plugin",
        plugin("mock").to_str().unwrap(),
        "--set",
        &format!("seed={seed}"),
        "--rate",
        "0",
        "--count",
        &count.to_string(),
        // With roll_records=1 each batch is an object: 256 records apiece.
        "--batch-size",
        "256",
        "--sink",
        sink,
    ]);
    ok(&out);
    out
}

/// Every row under `source` (read to the end, progress kept in `state`).
fn read_all(source: &str, state: &Path) -> Vec<Value> {
    let out = run(&[
        "run",
        "--source",
        &format!("{source}&follow=false"),
        "--state",
        state.to_str().unwrap(),
    ]);
    ok(&out);
    json_lines(&stdout(&out))
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|v| v.to_string());
    v
}

fn parquet_rows(bytes: Vec<u8>) -> i64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    SerializedFileReader::new(bytes::Bytes::from(bytes))
        .expect("a Parquet file")
        .metadata()
        .file_metadata()
        .num_rows()
}

#[test]
fn local_directory_round_trip_in_both_formats_and_progress_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let expected = mock_sessions(7, 700);
    let input: String = expected.iter().map(|r| format!("{r}\n")).collect();
    let expected = sorted(expected);
    for format in ["parquet", "jsonl"] {
        let uri = format!("file://{}/{format}?format={format}", dir.path().display());
        ok(&run_with_input(
            &["run", "--sink", &format!("{uri}&roll_records=200")],
            input.as_bytes(),
        ));
        let list = || -> Vec<String> {
            std::fs::read_dir(dir.path().join(format))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !n.starts_with('.') && !n.starts_with('_'))
                .collect()
        };
        let objects = list();
        assert_eq!(
            objects.len(),
            3,
            "700 records rolled at 200 (whole batches of 256): {objects:?}"
        );
        assert!(objects.iter().all(|n| n.ends_with(&format!(".{format}"))));
        // Names come from source positions: writing the same input again overwrites.
        ok(&run_with_input(
            &["run", "--sink", &format!("{uri}&roll_records=200")],
            input.as_bytes(),
        ));
        assert_eq!(list().len(), objects.len(), "a replay made new objects");
        // Progress is kept: a second read finds nothing new.
        let state = dir.path().join(format!("{format}.state"));
        assert_eq!(sorted(read_all(&uri, &state)), expected, "{format}");
        assert!(
            read_all(&uri, &state).is_empty(),
            "{format}: finished objects were read again"
        );
    }
}

#[test]
fn a_backfill_shows_progress() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}/many?format=jsonl", dir.path().display());
    generate(4, 256 * 120, &format!("{uri}&roll_records=1"));
    let out = run(&[
        "run",
        "--source",
        &format!("{uri}&follow=false"),
        "--state",
        dir.path().join("s").to_str().unwrap(),
    ]);
    ok(&out);
    assert_eq!(stdout(&out).lines().count(), 256 * 120);
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("objects_read="))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("objects_read=100 objects_left=20 rows_read=25344"),
        "{line}"
    );
}

#[test]
fn parquet_columns_can_be_given_by_example_records() {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples.jsonl");
    std::fs::write(&examples, "{\"id\":1,\"name\":\"a\",\"score\":0.5}\n").unwrap();
    let uri = format!(
        "file://{}/out?format=parquet&schema={}",
        dir.path().display(),
        examples.display()
    );
    // The records lack `score` (a column anyway) and one has a field the examples do not.
    let out = run_with_input(
        &["run", "--sink", &uri, "--on-error", "skip"],
        b"{\"id\":2,\"name\":\"b\"}\n{\"id\":3,\"name\":\"c\",\"extra\":true}\n",
    );
    ok(&out);
    assert!(
        stderr(&out).contains("stdin:2") && stderr(&out).contains("does not fit the columns"),
        "{}",
        stderr(&out)
    );
    let object = std::fs::read(dir.path().join("out/stdin-000000000001.parquet")).unwrap();
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(bytes::Bytes::from(object)).unwrap();
    let meta = reader.metadata().file_metadata();
    assert_eq!((meta.num_rows(), meta.schema_descr().num_columns()), (1, 3));

    std::fs::write(&examples, "not json\n").unwrap();
    let e = error_line(&run_with_input(&["run", "--sink", &uri], b"{}\n"));
    assert!(e.contains("examples.jsonl: line 1: invalid JSON"), "{e}");
}

/// Runs a Python `script` (with pyarrow) on `file`; what it prints, as JSON rows.
fn pyarrow(script: &str, file: &Path) -> Vec<Value> {
    s3::pyarrow(script, &[file.to_str().unwrap()])
}

#[test]
fn parquet_from_pyarrow_is_ingested_and_ours_is_read_by_pyarrow() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("pyarrow");
    let fixture = dir.path().join("sessions.parquet");
    // A file as the original Python generator wrote it: pandas/pyarrow defaults (snappy), nested
    // events.
    let script = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
rows = [{"session_id": f"s{i}", "user_id": f"u{i % 7}", "latitude": 39.0 + i / 8, "longitude": 22.0,
         "timestamp": 1700000000 + i, "clicks": i, "premium": i % 2 == 0,
         "events": [{"event_type": "login", "timestamp": 1700000000 + i},
                    {"event_type": "logout", "timestamp": 1700000100 + i}]} for i in range(50)]
pq.write_table(pa.Table.from_pylist(rows), sys.argv[1])
print(json.dumps(rows))
"#;
    let rows = pyarrow(script, &fixture);
    s3::put(&server, &format!("{prefix}/in/sessions.parquet"), &fixture);

    let source = s3::uri(&server, &format!("{prefix}/in"), "format=parquet");
    assert_eq!(
        sorted(read_all(&source, &dir.path().join("state"))),
        sorted(rows.clone())
    );

    // The other way: JSON lines in, a Sluice-written Parquet object, pyarrow reads it back.
    let input: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let sink = s3::uri(&server, &format!("{prefix}/out"), "format=parquet");
    ok(&run_with_input(&["run", "--sink", &sink], input.as_bytes()));
    let object = s3::get(&server, &format!("{prefix}/out/stdin-000000000001.parquet"))
        .expect("the object is named after its first record's position");
    let ours = dir.path().join("ours.parquet");
    std::fs::write(&ours, object).unwrap();
    let read_back = r#"
import json, sys
import pyarrow.parquet as pq
print(json.dumps(pq.read_table(sys.argv[1]).to_pylist()))
"#;
    assert_eq!(pyarrow(read_back, &ours), rows);
}

/// The generator writes objects; the producer moves their rows into Kafka, keyed by user.
#[test]
fn bucket_to_kafka_exactly_once_and_a_restarted_producer_finishes_the_half_done_object() {
    let (server, broker) = (s3::server(), kafka::broker());
    let prefix = unique("raw");
    let raw = s3::uri(&server, &prefix, "format=parquet");
    generate(11, 5000, &format!("{raw}&roll_records=1000"));
    let topic = unique("user_sessions");
    create_topic(&broker, &topic, 4);
    let (source, producer_wasm) = (format!("{raw}&follow=false"), plugin("producer"));
    let sink = kafka::sink_uri(&broker, &topic);
    let producer = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--source",
            &source,
            "--plugin",
            producer_wasm.to_str().unwrap(),
            "--sink",
            &sink,
        ];
        args.extend_from_slice(extra);
        ok(&run(&args));
    };
    // Stopped (gracefully) in the middle of the third object, then run again to the end.
    producer(&["--count", "2300"]);
    let progress: Value = serde_json::from_slice(
        &s3::get(&server, &format!("{prefix}/_sluice/sluice.progress.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(progress["done"].as_array().unwrap().len(), 2, "{progress}");
    assert_eq!(
        progress["partial"].as_object().unwrap().values().next(),
        Some(&Value::from(2300 - 2048)),
        "{progress}"
    );
    producer(&[]);

    let read = read_topic_with(
        &broker,
        &topic,
        5000,
        Duration::from_secs(2),
        Duration::from_secs(60),
        |m| {
            use rdkafka::message::Message;
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            let value: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            (key, value, header(m, "source-object"))
        },
    );
    let mut seen = HashMap::new();
    for (key, value, object) in &read {
        assert_eq!(
            key.as_deref(),
            value["user_id"].as_str(),
            "keyed by user_id"
        );
        assert!(
            object.as_ref().is_some_and(|o| o.starts_with(&prefix)),
            "{object:?}"
        );
        *seen
            .entry(value["session_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    let expected: BTreeSet<String> = mock_sessions(11, 5000)
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(
        seen.values().all(|&n| n == 1),
        "duplicates: {}",
        seen.values().filter(|&&n| n > 1).count()
    );
}

/// kill -9 of the producer mid-stream: objects it had finished are not sent again; the rest is
/// sent at least once.
#[test]
fn producer_killed_mid_stream_resends_nothing_finished() {
    let (server, broker) = (s3::server(), kafka::broker());
    let prefix = unique("raw-kill");
    let raw = s3::uri(&server, &prefix, "format=parquet");
    let total = 60_000u64;
    generate(12, total, &format!("{raw}&roll_records=2000"));
    let topic = unique("user_sessions_kill");
    create_topic(&broker, &topic, 4);
    let source = format!("{raw}&follow=false");
    let args = |batch: &'static str| {
        vec![
            "run".to_owned(),
            "--source".into(),
            source.clone(),
            "--plugin".into(),
            plugin("producer").display().to_string(),
            "--sink".into(),
            kafka::sink_uri(&broker, &topic),
            "--batch-size".into(),
            batch.into(),
        ]
    };
    // Small batches, so that it is still running when killed.
    let mut first: Child = with_credentials(&mut runtime())
        .args(args("8"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let progress_key = format!("{prefix}/_sluice/sluice.progress.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let done_at_kill = loop {
        let done = s3::get(&server, &progress_key)
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map_or(0, |p| p["done"].as_array().map_or(0, Vec::len));
        if done >= 2 || Instant::now() > deadline || first.try_wait().unwrap().is_some() {
            break done;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = first.kill();
    first.wait().unwrap();
    let progress: Value =
        serde_json::from_slice(&s3::get(&server, &progress_key).unwrap()).unwrap();
    let finished: Vec<String> = progress["done"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert!(finished.len() >= done_at_kill);
    let out = with_credentials(&mut runtime())
        .args(args("256"))
        .output()
        .unwrap();
    ok(&out);

    let read = read_topic_with(
        &broker,
        &topic,
        total as usize,
        Duration::from_secs(2),
        Duration::from_secs(90),
        |m| {
            use rdkafka::message::Message;
            let value: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            (
                value["session_id"].as_str().unwrap().to_owned(),
                header(m, "source-object").unwrap(),
            )
        },
    );
    let sessions: BTreeSet<&str> = read.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sessions.len() as u64, total, "records lost");
    let mut per_object: HashMap<&str, i64> = HashMap::new();
    for (_, object) in &read {
        *per_object.entry(object.as_str()).or_insert(0) += 1;
    }
    for key in &finished {
        let rows = parquet_rows(s3::get(&server, key).unwrap());
        assert_eq!(
            per_object.get(key.as_str()),
            Some(&rows),
            "{key} was finished before the kill and sent again"
        );
    }
    eprintln!(
        "kill -9 after {} finished objects: {} records read for {total}, {} duplicates",
        finished.len(),
        read.len(),
        read.len() as u64 - total
    );
}

#[test]
fn an_s3_outage_of_10_s_is_retried_and_loses_nothing() {
    let mut server = s3::PrivateServer::start();
    let prefix = unique("outage");
    let sink = s3::uri(&server.addr, &prefix, "format=jsonl&roll=300ms");
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut generator = with_credentials(&mut runtime())
        .args([
            "run",
            "--plugin",
            plugin("mock").to_str().unwrap(),
            "--set",
            "seed=5",
        ])
        .args(["--rate", "1000", "--count", "8000", "--sink", &sink])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    server.kill();
    std::thread::sleep(Duration::from_secs(10));
    server.restart();
    let status = generator.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("retrying in"),
        "the outage was not noticed:\n{log}"
    );
    let rows = read_all(
        &s3::uri(&server.addr, &prefix, "format=jsonl"),
        &dir.path().join("state"),
    );
    let (got, expected) = (ids(&rows), ids(&mock_sessions(5, 8000)));
    assert_eq!(got.len(), expected.len(), "records lost");
    assert!(got.keys().all(|k| expected.contains_key(k)));
    eprintln!("S3 outage: {} duplicates", rows.len() - expected.len());
}

#[test]
fn a_large_object_is_uploaded_in_parts_and_read_back_whole() {
    let server = s3::server();
    let prefix = unique("large");
    let rows = mock_sessions(21, 40_000);
    let input: String = rows.iter().map(|r| format!("{r}\n")).collect();
    assert!(input.len() > 16 << 20, "more than the multipart threshold");
    let uri = s3::uri(&server, &prefix, "format=jsonl");
    ok(&run_with_input(
        &[
            "run",
            "--sink",
            &format!("{uri}&roll_records=100000&roll_bytes=1GiB"),
        ],
        input.as_bytes(),
    ));
    let object =
        s3::get(&server, &format!("{prefix}/stdin-000000000001.jsonl")).expect("one object");
    assert_eq!(object, input.as_bytes());
}

#[test]
fn bad_objects_are_named_and_handled_by_policy() {
    let server = s3::server();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("bad");
    // Parquet: one good object, one that is not Parquet at all.
    let parquet = s3::uri(&server, &format!("{prefix}/pq"), "format=parquet");
    generate(3, 100, &parquet);
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"PAR1 this is not a parquet file PAR1").unwrap();
    s3::put(
        &server,
        &format!("{prefix}/pq/zz-corrupt.parquet"),
        &garbage,
    );
    let read = |uri: &str, state: &str, policy: &str| {
        run(&[
            "run",
            "--source",
            &format!("{uri}&follow=false"),
            "--on-error",
            policy,
            "--state",
            dir.path().join(state).to_str().unwrap(),
        ])
    };
    let out = read(&parquet, "pq-fail", "fail");
    assert!(!out.status.success());
    let e = error_line(&out);
    assert!(
        e.contains(&format!("{prefix}/pq/zz-corrupt.parquet#0"))
            && e.contains("not a readable Parquet file"),
        "{e}"
    );
    assert_eq!(
        json_lines(&stdout(&out)).len(),
        100,
        "the good object's rows still come out"
    );
    let out = read(&parquet, "pq-skip", "skip");
    ok(&out);
    assert_eq!(json_lines(&stdout(&out)).len(), 100);
    assert!(
        stderr(&out).contains("zz-corrupt.parquet"),
        "{}",
        stderr(&out)
    );

    // JSON lines: a non-JSON line in the middle.
    let lines = dir.path().join("lines.jsonl");
    std::fs::write(&lines, "{\"a\":1}\nnot json\n\n{\"a\":2}\n").unwrap();
    s3::put(&server, &format!("{prefix}/jl/x.jsonl"), &lines);
    let jsonl = s3::uri(&server, &format!("{prefix}/jl"), "format=jsonl");
    let out = read(&jsonl, "jl-fail", "fail");
    let e = error_line(&out);
    assert!(
        e.contains(&format!("{prefix}/jl/x.jsonl#1")) && e.contains("line 2: invalid JSON"),
        "{e}"
    );
    assert_eq!(stdout(&out), "{\"a\":1}\n");
    let out = read(&jsonl, "jl-skip", "skip");
    ok(&out);
    assert_eq!(stdout(&out), "{\"a\":1}\n{\"a\":2}\n");

    // Wrong credentials and a missing bucket: one line naming the URI.
    let out = with_credentials(&mut runtime())
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .args(["run", "--source", &jsonl])
        .output()
        .unwrap();
    let e = error_line(&out);
    assert!(
        e.contains(&format!("s3://{}/{prefix}/jl", s3::BUCKET))
            && e.contains("access denied: check AWS_ACCESS_KEY_ID"),
        "{e}"
    );
    let missing = format!(
        "s3://no-such-bucket-{}/x?endpoint=http://{server}",
        std::process::id()
    );
    let e = error_line(&run(&["run", "--source", &missing]));
    assert!(
        e.contains("no-such-bucket") && e.contains("the bucket does not exist"),
        "{e}"
    );
    let e = error_line(
        &runtime()
            .env_remove("AWS_ACCESS_KEY_ID")
            .args(["run", "--source", &jsonl])
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("no S3 credentials: set AWS_ACCESS_KEY_ID"),
        "{e}"
    );
}

/// Runs `cmd` for `time`, then SIGINT: it must exit 0. Its log.
fn run_for(cmd: &mut Command, time: Duration, log_path: &Path) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log_path).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(time);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(status.success(), "{log}");
    log
}

/// examples/stack.toml as shipped, on embedded defaults, for 30 s.
#[test]
fn the_stack_runs_on_embedded_defaults_and_counts_match_at_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let stack = std::fs::read_to_string(repo.join("examples/stack.toml")).unwrap();
    // The same file, next to its own data, with the plugins where this build put them.
    let plugins = common::target_dir().join("wasm32-wasip2/release");
    let stack = stack
        .replace("../target/wasm32-wasip2/release", plugins.to_str().unwrap())
        .replace("../data/", "data/");
    std::fs::write(dir.path().join("stack.toml"), stack).unwrap();
    std::fs::copy(
        repo.join("examples/sessions_per_minute.jsonl"),
        dir.path().join("sessions_per_minute.jsonl"),
    )
    .unwrap();
    let log_path = dir.path().join("log");
    let mut runtime = runtime();
    let cmd = runtime.args([
        "run",
        "--config",
        dir.path().join("stack.toml").to_str().unwrap(),
    ]);
    let log = run_for(cmd, Duration::from_secs(30), &log_path);
    let done = |pipeline: &str| -> (u64, u64) {
        let line = log
            .lines()
            .find(|l| {
                l.contains(&format!("pipeline{{pipeline={pipeline}}}")) && l.contains(" done ")
            })
            .unwrap_or_else(|| panic!("no end line for {pipeline}:\n{log}"));
        let field = |name: &str| -> u64 {
            let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
            line[at..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (field("records_in"), field("records_out"))
    };
    let rows_in = |bucket: &str| -> (usize, i64) {
        let files: Vec<_> = std::fs::read_dir(dir.path().join("data").join(bucket))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let parquet: Vec<_> = files
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        (
            parquet.len(),
            parquet
                .into_iter()
                .map(|p| parquet_rows(std::fs::read(p).unwrap()))
                .sum(),
        )
    };
    let (generated_in, generated) = done("generator");
    let (produced_in, produced) = done("producer");
    let (enriched_in, enriched) = done("enrich");
    let (archived_in, archived) = done("archive");
    let (raw_objects, raw_rows) = rows_in("analytics-raw-data");
    let (processed_objects, processed_rows) = rows_in("analytics-processed");
    eprintln!(
        "generated {generated} in {raw_objects} objects, produced {produced}, enriched {enriched}, archived {archived} in {processed_objects} objects"
    );
    assert_eq!(generated_in, generated);
    assert!(raw_objects >= 2, "a file every 10 s: {raw_objects} in 30 s");
    assert_eq!(
        raw_rows as u64, generated,
        "every generated record is in the raw bucket"
    );
    assert!(produced > 0 && produced_in == produced && produced <= generated);
    assert_eq!((enriched_in, enriched), (produced, produced));
    assert_eq!((archived_in, archived), (enriched, enriched));
    assert_eq!(
        processed_rows as u64, archived,
        "every enriched record is in the processed bucket"
    );
    // The table follows the processed bucket (its objects roll every 10 s): what it read of
    // them by the stop, each row once.
    let (tabled_in, tabled) = done("table");
    assert!(
        tabled_in == tabled && tabled <= archived,
        "{tabled} of {archived}"
    );
    if tabled > 0 {
        let data = dir.path().join("data");
        let t = common::iceberg::read_sqlite(
            data.join("catalog.db").to_str().unwrap(),
            data.join("warehouse").to_str().unwrap(),
            "analytics.sessions",
        );
        assert_eq!(
            (t["rows"].as_u64(), t["distinct"].as_u64()),
            (Some(tabled), Some(tabled))
        );
    }
    // The rollup: every session of the processed objects it read to their end is counted in
    // its table, in the window, country and status pyarrow puts it in.
    let data = dir.path().join("data");
    let (rolled_in, _) = done("rollup");
    let rollup = common::iceberg::stack_rollup_check(
        data.join("catalog.db").to_str().unwrap(),
        data.join("warehouse").to_str().unwrap(),
        "analytics.sessions_per_minute",
        &data.join("analytics-processed"),
    )
    .unwrap_or_else(|e| panic!("the rollup's table: {e}\n{log}"));
    eprintln!("rollup read {rolled_in} rows: {rollup}");
    assert!(rollup["expected"].as_u64() <= Some(rolled_in), "{rollup}");
    assert_eq!(rollup["sessions"], rollup["expected"], "{rollup}");
    assert!(
        rollup["wrong"].as_array().is_some_and(Vec::is_empty),
        "{rollup}"
    );
    // The producer finished every object it started: its progress names them all done.
    let progress: Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join("data/analytics-raw-data/_sluice/sluice.progress.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        progress["partial"].as_object().unwrap().is_empty(),
        "{progress}"
    );
}

/// The same examples/stack.toml against the real broker and S3 server: only endpoints change.
#[test]
fn the_stack_runs_against_kafka_and_s3_by_changing_only_endpoints() {
    let (server, broker) = (s3::server(), kafka::broker());
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = common::target_dir().join("wasm32-wasip2/release");
    let stack = std::fs::read_to_string(repo.join("examples/stack.toml"))
        .unwrap()
        .replace("../target/wasm32-wasip2/release", plugins.to_str().unwrap());
    std::fs::write(dir.path().join("stack.toml"), stack).unwrap();
    let prefix = unique("stack");
    let (sessions, processed) = (unique("user_sessions"), unique("processed_sessions"));
    create_topic(&broker, &sessions, 2);
    create_topic(&broker, &processed, 2);
    let group = |topic: &str, g: &str| {
        format!("kafka://{broker}/{topic}?group={g}&prop.session.timeout.ms=6000")
    };
    let log_path = dir.path().join("log");
    let mut runtime = runtime();
    let cmd = with_credentials(&mut runtime)
        .args([
            "run",
            "--config",
            dir.path().join("stack.toml").to_str().unwrap(),
        ])
        .env(
            "SLUICE_ENDPOINT_RAW_BUCKET",
            s3::uri(
                &server,
                &format!("{prefix}/raw"),
                "format=parquet&roll=5s&poll=1s",
            ),
        )
        .env(
            "SLUICE_ENDPOINT_RAW_OBJECTS",
            s3::uri(&server, &format!("{prefix}/raw"), "format=parquet&poll=1s"),
        )
        .env(
            "SLUICE_ENDPOINT_USER_SESSIONS",
            group(&sessions, &unique("enrich")),
        )
        .env(
            "SLUICE_ENDPOINT_PROCESSED_SESSIONS",
            group(&processed, &unique("archive")),
        )
        .env(
            "SLUICE_ENDPOINT_PROCESSED_OBJECTS",
            s3::uri(
                &server,
                &format!("{prefix}/processed"),
                "format=parquet&poll=1s&group=rollup",
            ),
        )
        .env(
            "SLUICE_ENDPOINT_SESSIONS_PER_MINUTE",
            common::iceberg::uri(
                &common::iceberg::catalog(),
                &format!("analytics/{}_per_minute", prefix.replace('-', "_")),
                &format!(
                    "schema={}",
                    repo.join("examples/sessions_per_minute.jsonl").display()
                ),
            ),
        )
        .args([
            "--endpoint",
            &format!(
                "processed_bucket={}",
                s3::uri(
                    &server,
                    &format!("{prefix}/processed"),
                    "format=parquet&roll=5s&poll=1s"
                )
            ),
        ])
        .args([
            "--endpoint",
            &format!(
                "sessions_table={}",
                common::iceberg::uri(
                    &common::iceberg::catalog(),
                    &format!("analytics/{}", prefix.replace('-', "_")),
                    "partition=day(timestamp)&commit=2s"
                )
            ),
        ]);
    let log = run_for(cmd, Duration::from_secs(25), &log_path);
    assert!(
        !dir.path().join("data").exists(),
        "nothing went to the embedded defaults"
    );
    let archived = read_all(
        &s3::uri(&server, &format!("{prefix}/processed"), "format=parquet"),
        &dir.path().join("state"),
    );
    assert!(
        !archived.is_empty(),
        "nothing reached the processed bucket:\n{log}"
    );
    for row in &archived {
        assert!(
            row["country"].is_string() && row["status"].is_string(),
            "not enriched: {row}"
        );
    }
    let in_topic = read_topic_with(
        &broker,
        &processed,
        archived.len(),
        Duration::from_secs(1),
        Duration::from_secs(30),
        |m| {
            use rdkafka::message::Message;
            let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            v["session_id"].as_str().unwrap().to_owned()
        },
    );
    let in_topic: BTreeSet<String> = in_topic.into_iter().collect();
    assert!(
        ids(&archived).keys().all(|id| in_topic.contains(id)),
        "archived rows came through processed_sessions"
    );
}

/// Kafka -> enrich -> S3 through everything going wrong in one run: the runtime killed -9 and
/// restarted, the broker paused for 10 s, the S3 server gone for 10 s. Nothing is lost.
/// `SLUICE_FAULTS_RECORDS` and `SLUICE_FAULTS_BATCH` scale it (200 000 records, batches of 1 in
/// CI; the figures in the notes come from 1 000 000 in batches of 4).
#[test]
fn kafka_to_s3_survives_a_crash_a_broker_pause_and_an_s3_outage_in_one_run() {
    let broker = kafka::PrivateBroker::start();
    let mut server = s3::PrivateServer::start();
    let (topic, group, prefix) = (unique("faults"), unique("faults"), unique("faults"));
    create_topic(&broker.addr, &topic, 4);
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let total = env("SLUICE_FAULTS_RECORDS", 200_000);
    let batch = env("SLUICE_FAULTS_BATCH", 1).to_string();
    generate(31, total, &kafka::sink_uri(&broker.addr, &topic));
    let dir = tempfile::tempdir().unwrap();
    let sink = s3::uri(&server.addr, &prefix, "format=jsonl&roll=500ms");
    let start = |n: usize| -> Child {
        with_credentials(&mut runtime())
            .args([
                "run",
                "--source",
                &kafka::source_uri(&broker.addr, &topic, &group),
            ])
            .args([
                "--plugin",
                plugin("enrich").to_str().unwrap(),
                "--sink",
                &sink,
            ])
            // Small batches: the object sink acks every 500 ms, so the stream is still flowing
            // when the faults hit.
            .args(["--batch-size", &batch, "--workers", "1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("log{n}"))).unwrap())
            .spawn()
            .unwrap()
    };
    let log =
        |n: usize| std::fs::read_to_string(dir.path().join(format!("log{n}"))).unwrap_or_default();
    let wait_for_log = |n: usize, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !log(n).contains(needle) {
            assert!(Instant::now() < deadline, "no `{needle}`:\n{}", log(n));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut first = start(0);
    wait_for_log(0, "object written");
    first.kill().unwrap(); // kill -9
    first.wait().unwrap();
    let mut second = start(1);
    wait_for_log(1, "object written");
    // How far the stream was at each fault (objects the restarted runtime wrote so far).
    let written = |n: usize| log(n).matches("object written").count();
    broker.signal("-STOP");
    let paused_at = written(1);
    std::thread::sleep(Duration::from_secs(10));
    broker.signal("-CONT");
    std::thread::sleep(Duration::from_secs(2));
    server.kill();
    let s3_down_at = written(1);
    std::thread::sleep(Duration::from_secs(10));
    server.restart();
    // Until every record is in the bucket (read back with a progress file of its own).
    let deadline = Instant::now() + Duration::from_secs(240.max(total / 1000));
    let source = s3::uri(&server.addr, &prefix, "format=jsonl");
    let rows = loop {
        std::thread::sleep(Duration::from_secs(3));
        let _ = std::fs::remove_file(dir.path().join("state"));
        let rows = read_all(&source, &dir.path().join("state"));
        if ids(&rows).len() as u64 >= total || Instant::now() > deadline {
            break rows;
        }
        assert!(
            second.try_wait().unwrap().is_none(),
            "the runtime exited:\n{}",
            log(1)
        );
    };
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(second.wait().unwrap().success(), "{}", log(1));
    let unique_sessions = ids(&rows).len() as u64;
    eprintln!(
        "faults: objects written before the kill {}, at the broker pause {paused_at}, at the S3 outage {s3_down_at}, in all {}",
        written(0),
        written(1)
    );
    eprintln!(
        "faults: {total} in, {} rows in the bucket, {} duplicates, {} lost",
        rows.len(),
        rows.len() as u64 - unique_sessions,
        total - unique_sessions
    );
    assert_eq!(unique_sessions, total, "records lost:\n{}", log(1));
    assert!(
        log(1).contains("retrying in"),
        "the S3 outage was not noticed"
    );
}
