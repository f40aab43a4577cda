//! Stateful plugins through the real binary: state kept across restarts in checkpoints, timers
//! of both domains, the state limit; and Kafka -> rollup -> an Iceberg table exactly once
//! across kill -9, a member of the group dying, a hot swap, and deduplication across kill -9.
//! Tables are read with pyiceberg and checked against a count made in Python from the input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::iceberg;
use common::kafka::*;
use common::process::*;
use common::{error_line, json_lines, plugin, run, s3, stderr, stdout};
use serde_json::{json, Value};

fn lines(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

fn session(id: &str, ts: &str, country: &str, status: &str) -> Value {
    json!({"session_id": id, "timestamp": ts, "country": country, "status": status})
}

#[test]
fn rollup_state_survives_a_restart_through_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = format!("file://{}", dir.path().join("checkpoints").display());
    let rollup = plugin("rollup");
    let args = [
        "run",
        "--plugin",
        rollup.to_str().unwrap(),
        "--checkpoints",
        &checkpoints,
    ];
    let first = run(
        &args,
        lines(&[
            session("a", "2026-12-01 10:00:05+0000", "Greece", "accepted"),
            session("b", "2026-12-01 10:00:30+0000", "Greece", "accepted"),
            session("c", "2026-12-01 10:00:59+0000", "Italy", "rejected"),
        ])
        .as_bytes(),
    );
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first), "", "the window is still open");
    // The next run closes the window with the counts the first one took in.
    let second = run(
        &args,
        lines(&[session(
            "d",
            "2026-12-01 10:01:15+0000",
            "Greece",
            "accepted",
        )])
        .as_bytes(),
    );
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        json_lines(&stdout(&second)),
        [
            json!({"window_start":"2026-12-01T10:00:00Z","window_end":"2026-12-01T10:01:00Z","country":"Greece","status":"accepted","sessions":2}),
            json!({"window_start":"2026-12-01T10:00:00Z","window_end":"2026-12-01T10:01:00Z","country":"Italy","status":"rejected","sessions":1}),
        ]
    );
}

#[test]
fn each_object_of_a_bucket_closes_its_windows_when_read_to_its_end() {
    // Two objects, nothing after them: no record moves stream time past their windows, but an
    // object is a lane that ends, so each closes every window it counted in.
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("in");
    std::fs::create_dir(&bucket).unwrap();
    let mut want = std::collections::BTreeMap::new();
    for (object, n) in [("a.jsonl", 150), ("b.jsonl", 90)] {
        let sessions: Vec<Value> = (0..n)
            .map(|i| {
                let (country, status) = (
                    ["Greece", "Italy"][i % 2],
                    ["accepted", "rejected"][i % 3 % 2],
                );
                let at = format!("2026-12-01 10:{:02}:{:02}+0000", i / 60, i % 60);
                *want
                    .entry((format!("2026-12-01T10:{:02}:00Z", i / 60), country, status))
                    .or_insert(0u64) += 1;
                session(&format!("{object}-{i}"), &at, country, status)
            })
            .collect();
        std::fs::write(bucket.join(object), lines(&sessions)).unwrap();
    }
    let rollup = plugin("rollup");
    let out = run(
        &[
            "run",
            "--source",
            &format!("file://{}?format=jsonl&follow=false", bucket.display()),
            "--plugin",
            rollup.to_str().unwrap(),
            "--checkpoints",
            &format!("file://{}", dir.path().join("checkpoints").display()),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got = std::collections::BTreeMap::new();
    let rows = json_lines(&stdout(&out));
    for r in &rows {
        let key = (
            r["window_start"].as_str().unwrap().to_owned(),
            r["country"].as_str().unwrap(),
            r["status"].as_str().unwrap(),
        );
        *got.entry(key).or_insert(0u64) += r["sessions"].as_u64().unwrap();
    }
    assert_eq!(got, want, "{rows:?}");
    // One row per window, country and status of each object: 3 windows in a, 2 in b.
    assert_eq!(rows.len(), 3 * 4 + 2 * 4, "{rows:?}");
}

/// statekit on stdin, one record a batch, with the clock granted.
fn statekit(checkpoints: &str, extra: &[&str], input: &[Value]) -> std::process::Output {
    let kit = plugin("statekit");
    let mut args = vec![
        "run",
        "--plugin",
        kit.to_str().unwrap(),
        "--checkpoints",
        checkpoints,
        "--batch-size",
        "1",
        "--allow",
        "clock",
    ];
    args.extend_from_slice(extra);
    run(&args, lines(input).as_bytes())
}

#[test]
fn event_time_timers_never_fire_early_and_one_in_the_past_fires_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = format!("file://{}", dir.path().display());
    let out = statekit(
        &checkpoints,
        &[],
        &[
            json!({"timer": "event", "id": "e", "at": 5000}),
            json!({"event_time": 4999}),
            json!({"count": "marker"}),
            json!({"event_time": 5000}),
            json!({"timer": "event", "id": "past", "at": 1}),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json_lines(&stdout(&out)),
        [
            json!({"count": "marker", "n": 1}),
            json!({"fired": "e", "domain": "event", "at": 5000}),
            json!({"fired": "past", "domain": "event", "at": 1}),
        ]
    );
}

#[test]
fn processing_time_timers_due_while_down_fire_on_restore() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = format!("file://{}", dir.path().display());
    let first = statekit(
        &checkpoints,
        &[],
        &[json!({"timer": "processing", "id": "p", "in_ms": 1500})],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first), "", "not due before the run ended");
    // Down for longer than the timer had left: it fires as soon as its lane is back.
    std::thread::sleep(Duration::from_millis(2000));
    let second = statekit(&checkpoints, &[], &[json!({"count": "k"})]);
    assert!(second.status.success(), "{}", stderr(&second));
    let out = json_lines(&stdout(&second));
    assert!(
        out.iter()
            .any(|v| v["fired"] == "p" && v["domain"] == "processing"),
        "{out:?}"
    );
}

#[test]
fn a_state_write_past_the_limit_fails_its_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = format!("file://{}", dir.path().display());
    let input = [
        json!({"put": "big", "bytes": 4000}),
        json!({"count": "after"}),
    ];
    let skip = statekit(
        &checkpoints,
        &["--state-limit", "1KiB", "--on-error", "skip"],
        &input,
    );
    assert!(skip.status.success(), "{}", stderr(&skip));
    assert!(
        stderr(&skip).contains("state_limit="),
        "the failure names the limit:\n{}",
        stderr(&skip)
    );
    assert_eq!(
        json_lines(&stdout(&skip)),
        [json!({"count": "after", "n": 1})]
    );
    let fail = statekit(&checkpoints, &["--state-limit", "1KiB"], &input);
    assert!(!fail.status.success());
    let e = error_line(&fail);
    assert!(e.contains("stdin:1") && e.contains("state_limit="), "{e}");
}

#[test]
fn old_checkpoints_are_deleted_as_new_ones_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = format!("file://{}", dir.path().display());
    let kit = plugin("statekit");
    // 40 writes at 20 a second and a checkpoint every 100 ms: many checkpoints on any machine.
    let input: Vec<Value> = (0..40).map(|i| json!({"count": format!("k{i}")})).collect();
    let mut cmd = common::runtime();
    cmd.env("SLUICE_LOG", "info,sluice::pipeline::checkpoint=debug")
        .args([
            "run",
            "--plugin",
            kit.to_str().unwrap(),
            "--checkpoints",
            &checkpoints,
            "--batch-size",
            "1",
            "--rate",
            "20",
            "--checkpoint-every",
            "100ms",
        ]);
    let out = common::run_with(&mut cmd, lines(&input).as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = stderr(&out).matches("checkpoint stored").count();
    assert!(stored >= 5, "only {stored} checkpoints: {}", stderr(&out));
    let snapshots: Vec<_> = walkdir(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "state"))
        .collect();
    assert_eq!(
        snapshots.len(),
        1,
        "after {stored} checkpoints: {snapshots:?}"
    );
    // And the one kept is the one the next run starts from.
    let next = statekit(&checkpoints, &[], &[json!({"count": "k0"})]);
    assert!(next.status.success(), "{}", stderr(&next));
    assert_eq!(json_lines(&stdout(&next)), [json!({"count": "k0", "n": 2})]);
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walkdir(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_stateful_plugin_without_a_place_for_checkpoints_is_refused_with_the_fix() {
    let rollup = plugin("rollup");
    let out = run(&["run", "--plugin", rollup.to_str().unwrap()], b"");
    assert!(!out.status.success());
    let e = error_line(&out);
    assert!(
        e.contains("rollup.wasm keeps state") && e.contains("--checkpoints file://DIR"),
        "{e}"
    );
}

/// Sessions over 30 minutes of event time: the file pyiceberg's check counts from, and the
/// records (keyed by session, Kafka timestamp = the session's) for a topic of `partitions`.
/// After them, one record per partition an hour later, so every window of the sessions closes
/// in every partition.
fn sessions(dir: &Path, n: usize, partitions: i32, repeats: bool) -> (PathBuf, Vec<Produced>) {
    const BASE: i64 = 1_796_112_000_000; // 2026-12-01T08:00:00Z
    let countries = ["Greece", "Italy", "Spain", "France", "Portugal"];
    let step = 30 * 60 * 1000 / n as i64;
    let mut file = String::new();
    let mut records = Vec::with_capacity(n + partitions as usize);
    for i in 0..n {
        let at = BASE + i as i64 * step;
        let ts = chrono_free_rfc3339(at);
        let id = format!("s{i}");
        let s = session(
            &id,
            &ts,
            countries[i % 5],
            ["accepted", "rejected"][(i / 5) % 2],
        );
        file.push_str(&format!("{s}\n"));
        let copies = if repeats && i % 10 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            records.push(Produced {
                key: Some(id.clone()),
                value: s.to_string(),
                timestamp_ms: Some(at),
                partition: None,
            });
        }
    }
    let late = BASE + 3 * 3600 * 1000;
    for p in 0..partitions {
        let v = session(
            &format!("end{p}"),
            &chrono_free_rfc3339(late),
            "Nowhere",
            "closing",
        );
        records.push(Produced {
            key: None,
            value: v.to_string(),
            timestamp_ms: Some(late),
            partition: Some(p),
        });
    }
    let path = dir.join("sessions.jsonl");
    std::fs::write(&path, file).unwrap();
    (path, records)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for ms since the epoch.
fn chrono_free_rfc3339(ms: i64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 {
        yoe + era * 400 + 1
    } else {
        yoe + era * 400
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The rollup's output columns, for creating the table at the start.
fn rollup_schema(dir: &Path) -> PathBuf {
    let path = dir.join("rollup.schema.jsonl");
    let example = json!({"window_start":"2026-12-01T10:00:00Z","window_end":"2026-12-01T10:01:00Z","country":"x","status":"x","sessions":1});
    std::fs::write(&path, format!("{example}\n")).unwrap();
    path
}

/// Kafka -> `plugin` -> the table, in the background, checkpointing every second.
fn stateful_writer(
    b: &str,
    input: &str,
    group: &str,
    sink: &str,
    plugin_file: &Path,
    log: &Path,
    extra: &[&str],
) -> Child {
    let mut cmd = common::runtime();
    s3::with_credentials(&mut cmd);
    let source = source_uri(b, input, group);
    let mut args = vec![
        "run",
        "--source",
        &source,
        "--plugin",
        plugin_file.to_str().unwrap(),
        "--sink",
        sink,
        "--checkpoint-every",
        "1s",
    ];
    args.extend_from_slice(extra);
    spawn_with(&mut cmd, &args, log)
}

/// Waits until the table matches the count made from `sessions` exactly, up to `timeout`.
fn await_exact(
    catalog: &str,
    s3: &str,
    table: &str,
    sessions: &Path,
    timeout: Duration,
    logs: &[&Path],
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let check = iceberg::rollup_check(catalog, s3, table, sessions);
        if let Ok(c) = &check {
            let exact = c["missing"].as_array().is_some_and(Vec::is_empty)
                && c["wrong"].as_array().is_some_and(Vec::is_empty)
                && c["extra"].as_array().is_some_and(Vec::is_empty);
            if exact {
                return c.clone();
            }
            // Counts too high never come down: a window counted twice is a failure at once.
            if let Some(w) = c["wrong"]
                .as_array()
                .and_then(|w| w.iter().find(|w| w[4].as_u64() > w[3].as_u64()))
            {
                panic!("counted twice: {w} in {c}");
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|l| log_of(l)).collect();
            panic!(
                "{table} does not match the count after {timeout:?}: {check:?}\nlogs:\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn kafka_to_rollup_to_iceberg_is_exactly_once_across_three_kill_9s() {
    let (b, s3, catalog) = (broker(), s3::server(), iceberg::catalog());
    let (input, group) = (unique("roll-in"), unique("roll"));
    let table = format!("analytics.{}", unique("rollup_k9").replace('-', "_"));
    create_topic(&b, &input, 4);
    let dir = tempfile::tempdir().unwrap();
    let (file, records) = sessions(dir.path(), 200_000, 4, false);
    produce_records(&b, &input, &records);
    let schema = rollup_schema(dir.path());
    let sink = iceberg::uri(
        &catalog,
        &table.replacen('.', "/", 1),
        &format!("schema={}", schema.display()),
    );
    let rollup = plugin("rollup");
    let mut logs = Vec::new();
    for round in 0..3u64 {
        let log = dir.path().join(format!("run{round}.log"));
        // Read at 20 000 records/s: 10 s for the topic, so every kill lands mid-way.
        let mut w = stateful_writer(
            &b,
            &input,
            &group,
            &sink,
            &rollup,
            &log,
            &["--rate", "20000"],
        );
        wait_for_log(&log, " committed ");
        std::thread::sleep(Duration::from_millis(300 + 500 * round));
        signal(&w, "-KILL");
        let _ = w.wait();
        logs.push(log);
    }
    let log = dir.path().join("last.log");
    let mut last = stateful_writer(&b, &input, &group, &sink, &rollup, &log, &[]);
    logs.push(log.clone());
    let refs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let check = await_exact(
        &catalog,
        &s3,
        &table,
        &file,
        Duration::from_secs(180),
        &refs,
    );
    terminate(&mut last, &log);
    assert_eq!(check["sessions"], 200_000, "{check}");
    eprintln!("rollup through three kill -9s: {check}");
}

#[test]
fn a_member_killed_mid_stream_hands_its_partitions_over_with_their_state() {
    let (b, s3, catalog) = (broker(), s3::server(), iceberg::catalog());
    let (input, group) = (unique("roll2-in"), unique("roll2"));
    let table = format!("analytics.{}", unique("rollup_pair").replace('-', "_"));
    create_topic(&b, &input, 4);
    let dir = tempfile::tempdir().unwrap();
    let (file, records) = sessions(dir.path(), 100_000, 4, false);
    produce_records(&b, &input, &records);
    let schema = rollup_schema(dir.path());
    let sink = iceberg::uri(
        &catalog,
        &table.replacen('.', "/", 1),
        &format!("schema={}", schema.display()),
    );
    let rollup = plugin("rollup");
    let rate = ["--rate", "5000"];
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = stateful_writer(&b, &input, &group, &sink, &rollup, &a_log, &rate);
    wait_for_log(&a_log, " committed ");
    let mut second = stateful_writer(&b, &input, &group, &sink, &rollup, &b_log, &rate);
    wait_for_log(&b_log, " committed ");
    std::thread::sleep(Duration::from_secs(1));
    signal(&a, "-KILL");
    let _ = a.wait();
    let check = await_exact(
        &catalog,
        &s3,
        &table,
        &file,
        Duration::from_secs(240),
        &[&a_log, &b_log],
    );
    terminate(&mut second, &b_log);
    assert_eq!(check["sessions"], 100_000, "{check}");
    eprintln!("rollup, a member killed: {check}");
}

#[test]
fn a_swapped_rollup_takes_over_the_counts_and_a_plugin_that_cannot_read_them_is_refused() {
    let (b, s3, catalog) = (broker(), s3::server(), iceberg::catalog());
    let (input, group) = (unique("roll3-in"), unique("roll3"));
    let table = format!("analytics.{}", unique("rollup_swap").replace('-', "_"));
    create_topic(&b, &input, 2);
    let dir = tempfile::tempdir().unwrap();
    let (file, records) = sessions(dir.path(), 60_000, 2, false);
    produce_records(&b, &input, &records);
    let schema = rollup_schema(dir.path());
    let sink = iceberg::uri(
        &catalog,
        &table.replacen('.', "/", 1),
        &format!("schema={}", schema.display()),
    );
    let addr = free_addr();
    let log = dir.path().join("w.log");
    let checkpoints = dir.path().join("checkpoints");
    let checkpoints_uri = format!("file://{}", checkpoints.display());
    let mut w = stateful_writer(
        &b,
        &input,
        &group,
        &sink,
        &plugin("rollup"),
        &log,
        &[
            "--rate",
            "10000",
            "--admin",
            &addr,
            "--checkpoints",
            &checkpoints_uri,
        ],
    );
    wait_for_admin(&addr);
    wait_for_log(&log, " committed ");
    // A plugin that cannot read rollup's counts (statekit keeps text keys) is refused, shown
    // the checkpointed state, and rollup stays: the sums below stay exact.
    let (status, body) = admin(
        &addr,
        "PUT",
        "/pipelines/main/plugins/rollup.wasm",
        Some(&plugin("statekit")),
    );
    assert_eq!(status, 422, "{body}");
    let refusal = body.to_string();
    assert!(
        refusal.contains("cannot read the state") && refusal.contains("is not text"),
        "{refusal}"
    );
    // The same rule built with cargo-component: another version, which finds the counts of
    // the windows still open where the first left them.
    let v2 = common::component_plugin("rollup");
    let (status, body) = admin(
        &addr,
        "PUT",
        "/pipelines/main/plugins/rollup.wasm",
        Some(&v2),
    );
    assert_eq!(status, 200, "{body}");
    // And the same rule in Python, whose check reads the counts the Rust versions kept.
    let (status, body) = admin(
        &addr,
        "PUT",
        "/pipelines/main/plugins/rollup.wasm",
        Some(&common::guest_plugin("rollup-py")),
    );
    assert_eq!(status, 200, "{body}");
    let check = await_exact(
        &catalog,
        &s3,
        &table,
        &file,
        Duration::from_secs(180),
        &[&log],
    );
    terminate(&mut w, &log);
    assert!(
        log_of(&log).contains("swapped in a new version"),
        "{}",
        log_of(&log)
    );
    assert_eq!(check["sessions"], 60_000, "{check}");
    // A checkpoint a second for 6 s or more; per lane only the committed snapshot and those
    // stored since are kept.
    let stored = log_of(&log).matches(" committed ").count();
    assert!(stored >= 4, "{stored} commits");
    let mut per_lane = std::collections::BTreeMap::<PathBuf, usize>::new();
    for file in walkdir(&checkpoints) {
        *per_lane
            .entry(file.parent().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_lane.len(), 2, "one folder per partition: {per_lane:?}");
    assert!(
        per_lane.values().all(|&n| n <= 3),
        "after {stored} commits: {per_lane:?}"
    );
}

#[test]
fn dedup_passes_each_id_once_into_a_table_across_kill_9() {
    let (b, s3, catalog) = (broker(), s3::server(), iceberg::catalog());
    let (input, group) = (unique("dedup-in"), unique("dedup"));
    let table = format!("analytics.{}", unique("dedup").replace('-', "_"));
    create_topic(&b, &input, 4);
    let dir = tempfile::tempdir().unwrap();
    // 10 % of the sessions twice, both copies on their id's partition.
    let (_, mut records) = sessions(dir.path(), 50_000, 4, true);
    records.retain(|r| r.partition.is_none());
    produce_records(&b, &input, &records);
    let examples = dir.path().join("dedup.schema.jsonl");
    std::fs::write(
        &examples,
        format!("{}\n", session("s", "2026-12-01T10:00:00Z", "x", "x")),
    )
    .unwrap();
    let sink = iceberg::uri(
        &catalog,
        &table.replacen('.', "/", 1),
        &format!("schema={}", examples.display()),
    );
    let dedup = plugin("dedup");
    let log = dir.path().join("first.log");
    let mut w = stateful_writer(
        &b,
        &input,
        &group,
        &sink,
        &dedup,
        &log,
        &["--rate", "10000"],
    );
    wait_for_log(&log, " committed ");
    std::thread::sleep(Duration::from_millis(500));
    signal(&w, "-KILL");
    let _ = w.wait();
    let log2 = dir.path().join("second.log");
    let mut second = stateful_writer(&b, &input, &group, &sink, &dedup, &log2, &[]);
    let deadline = Instant::now() + Duration::from_secs(180);
    while iceberg::rows_rest(&catalog, &s3, &table).is_none_or(|n| n < 50_000) {
        assert!(
            Instant::now() < deadline,
            "not all ids in the table:\n{}",
            log_of(&log2)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_secs(3));
    terminate(&mut second, &log2);
    let t = iceberg::read_rest(&catalog, &s3, &table);
    assert_eq!(t["rows"], 50_000, "each id once");
    assert_eq!(t["distinct"], 50_000);
}
