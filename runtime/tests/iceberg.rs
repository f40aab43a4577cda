//! Iceberg tables: Kafka -> enrich -> a table through SeaweedFS's REST catalog, exactly once
//! across kill -9, two writers and a catalog outage; the embedded SQLite catalog; bad input.
//! Every table is read back with pyiceberg.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::iceberg;
use common::kafka::*;
use common::process::*;
use common::{data, error_line, plugin, run, s3, stderr};
use serde_json::Value;

/// `analytics.NAME_PID_N`: a table no other test or earlier run uses.
fn table(name: &str) -> String {
    format!("analytics.{}", unique(name).replace('-', "_"))
}

fn table_path(table: &str) -> String {
    table.replacen('.', "/", 1)
}

/// Kafka -> enrich -> `sink`, in the background.
fn writer(b: &str, input: &str, group: &str, sink: &str, log: &Path) -> Child {
    writer_with(b, input, group, sink, log, &[])
}

fn writer_with(b: &str, input: &str, group: &str, sink: &str, log: &Path, extra: &[&str]) -> Child {
    let enrich = plugin("enrich");
    let mut cmd = common::runtime();
    s3::with_credentials(&mut cmd);
    let source = source_uri(b, input, group);
    let mut args = vec![
        "run",
        "--source",
        &source,
        "--plugin",
        enrich.to_str().unwrap(),
        "--sink",
        sink,
    ];
    args.extend_from_slice(extra);
    spawn_with(&mut cmd, &args, log)
}

/// The pipeline's records read so far, from `/metrics` at `addr`.
fn records_in(addr: &str) -> u64 {
    let (_, text) = http_get(addr, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("sluice_records_in_total{pipeline=\"main\"}"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Waits until the table holds `n` rows (by its snapshot summary), up to `timeout`; `log` is
/// shown if not.
fn await_rows(catalog: &str, s3: &str, table: &str, n: u64, timeout: Duration, log: &Path) {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = iceberg::rows_rest(catalog, s3, table);
        if rows.is_some_and(|r| r >= n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{table}: {rows:?} rows after {timeout:?}, expected {n}; the writer's log:\n{}",
            log_of(log)
                .lines()
                .filter(|l| !l.contains("progress"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Commit conflicts the logs counted.
fn conflicts(logs: &[&Path]) -> u64 {
    logs.iter()
        .flat_map(|l| {
            log_of(l)
                .lines()
                .filter(|l| l.contains(" committed "))
                .filter_map(|l| {
                    l.split("conflicts=")
                        .nth(1)?
                        .split(' ')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

fn assert_exactly(t: &Value, n: u64) {
    assert_eq!(t["rows"], n, "rows");
    assert_eq!(
        t["distinct"], n,
        "distinct session ids: a duplicate was written"
    );
}

#[test]
fn kafka_to_iceberg_is_exactly_once_across_three_kill_9s() {
    let (b, s3, catalog) = (broker(), s3::server(), iceberg::catalog());
    let (input, group, table) = (unique("ice-in"), unique("ice"), table("k9"));
    create_topic(&b, &input, 4);
    let dir = tempfile::tempdir().unwrap();
    let gen_log = dir.path().join("gen.log");
    // Fed for 40 s, so every run has records to commit before it is killed.
    let mut generator = feed(&b, &input, 5_000, 200_000, 21, &gen_log);
    let sink = iceberg::uri(
        &catalog,
        &table_path(&table),
        "partition=day(timestamp)&commit=1s",
    );
    let mut logs = Vec::new();
    for round in 0..3u64 {
        let log = dir.path().join(format!("run{round}.log"));
        let mut w = writer(&b, &input, &group, &sink, &log);
        wait_for_log(&log, " committed ");
        // Kill at different points of the commit cycle.
        std::thread::sleep(Duration::from_millis(300 + 450 * round));
        assert_still_feeding(&mut generator, &gen_log);
        signal(&w, "-KILL");
        let _ = w.wait();
        logs.push(log);
    }
    let log = dir.path().join("last.log");
    let mut last = writer(&b, &input, &group, &sink, &log);
    await_rows(
        &catalog,
        &s3,
        &table,
        200_000,
        Duration::from_secs(180),
        &log,
    );
    assert!(wait_exit(&mut generator, Duration::from_secs(60), &gen_log).success());
    std::thread::sleep(Duration::from_secs(2)); // a duplicate would land in the next commit
    terminate(&mut last, &log);

    let t = iceberg::read_rest(&catalog, &s3, &table);
    assert_exactly(&t, 200_000);
    let columns: Vec<&str> = t["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for enriched in ["country", "status", "timestamp"] {
        assert!(columns.contains(&enriched), "{columns:?}");
    }
    assert_eq!(t["types"]["timestamp"], "timestamptz");
    assert!(t["spec"].as_str().unwrap().contains("day"), "{}", t["spec"]);
    let files = t["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .all(|f| f.as_str().unwrap().contains("/timestamp_day=")),
        "{files:?}"
    );
    let snapshots = t["snapshots"].as_array().unwrap().len();
    // One commit a second at most per writer: a few dozen, not one per batch.
    assert!((4..200).contains(&snapshots), "{snapshots} snapshots");
    let positions = &t["snapshots"].as_array().unwrap().last().unwrap()["sluice.positions.main"];
    assert!(
        positions.as_str().unwrap().contains(&format!("{input}/3@")),
        "{positions}"
    );
    eprintln!(
        "kill -9 x3: 200000 rows, 0 duplicates, {snapshots} snapshots, {} data files",
        files.len()
    );
}

#[test]
fn two_writers_in_one_group_write_each_record_once_when_one_dies() {
    let (b, s3, catalog) = (broker(), s3::server(), iceberg::catalog());
    let (input, group, table) = (unique("ice2-in"), unique("ice2"), table("pair"));
    create_topic(&b, &input, 8);
    let dir = tempfile::tempdir().unwrap();
    let gen_log = dir.path().join("gen.log");
    // 20 s of feed: the kill comes once both members committed, about 10 s in.
    let mut generator = feed(&b, &input, 5_000, 100_000, 22, &gen_log);
    let sink = iceberg::uri(&catalog, &table_path(&table), "commit=100ms");
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = writer(&b, &input, &group, &sink, &a_log);
    wait_for_log(&a_log, " committed ");
    let mut second = writer(&b, &input, &group, &sink, &b_log);
    wait_for_log(&b_log, " committed ");
    std::thread::sleep(Duration::from_secs(2));
    assert_still_feeding(&mut generator, &gen_log);
    signal(&a, "-KILL");
    let _ = a.wait();
    await_rows(
        &catalog,
        &s3,
        &table,
        100_000,
        Duration::from_secs(180),
        &b_log,
    );
    assert!(wait_exit(&mut generator, Duration::from_secs(60), &gen_log).success());
    std::thread::sleep(Duration::from_secs(2));
    terminate(&mut second, &b_log);

    let t = iceberg::read_rest(&catalog, &s3, &table);
    assert_exactly(&t, 100_000);
    let conflicts = conflicts(&[&a_log, &b_log]);
    eprintln!(
        "two writers, one killed: 100000 rows, 0 duplicates, {conflicts} commit conflicts retried"
    );
}

#[test]
fn concurrent_writers_retry_conflicts_and_keep_each_others_positions() {
    let (s3, catalog) = (s3::server(), iceberg::catalog());
    let table = table("race");
    let sink = iceberg::uri(&catalog, &table_path(&table), "commit=20ms");
    let dir = tempfile::tempdir().unwrap();
    let logs: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("w{i}.log")))
        .collect();
    // Each writer reads an object of its own (a lane of its own), paced so that both commit
    // every 20 ms for 4 s side by side.
    let mut writers: Vec<Child> = logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            let objects = dir.path().join(format!("in{i}"));
            std::fs::create_dir_all(&objects).unwrap();
            let rows: String = (0..16_000)
                .map(|n| format!("{{\"session_id\":\"w{i}-{n}\"}}\n"))
                .collect();
            std::fs::write(objects.join(format!("part-{i}.jsonl")), rows).unwrap();
            let source = format!("file://{}?format=jsonl&follow=false", objects.display());
            let mut cmd = common::runtime();
            s3::with_credentials(&mut cmd);
            let args = [
                "run", "--source", &source, "--rate", "4000", "--sink", &sink,
            ];
            spawn_with(&mut cmd, &args, log)
        })
        .collect();
    for (w, log) in writers.iter_mut().zip(&logs) {
        assert!(
            wait_exit(w, Duration::from_secs(120), log).success(),
            "{}",
            log_of(log)
        );
    }
    let t = iceberg::read_rest(&catalog, &s3, &table);
    assert_exactly(&t, 32_000);
    let refs: Vec<&Path> = logs.iter().map(|l| l.as_path()).collect();
    let conflicts = conflicts(&refs);
    assert!(
        conflicts > 0,
        "two writers committing every 20 ms never met"
    );
    // The newest snapshot holds both writers' positions: each merged the other's in.
    let last = t["snapshots"].as_array().unwrap().last().unwrap()["sluice.positions.main"].clone();
    let lanes: serde_json::Map<String, Value> =
        serde_json::from_str(last.as_str().unwrap()).unwrap();
    assert_eq!(lanes.len(), 2, "{lanes:?}");
    assert!(lanes.values().all(|n| n == 15_999), "{lanes:?}");
    eprintln!("two concurrent writers: 32000 rows, {conflicts} commit conflicts retried");
}

#[test]
fn a_catalog_outage_is_retried_and_nothing_is_lost_or_doubled() {
    let b = broker();
    let mut server = s3::PrivateServer::start();
    let catalog = server.catalog();
    let (input, group, table) = (unique("ice3-in"), unique("ice3"), table("outage"));
    create_topic(&b, &input, 4);
    let dir = tempfile::tempdir().unwrap();
    let gen_log = dir.path().join("gen.log");
    let mut generator = feed(&b, &input, 5_000, 60_000, 23, &gen_log);
    // Little memory for records not committed: during the outage the writer stops reading.
    let sink = iceberg::uri(&catalog, &table_path(&table), "commit=1s&max_pending=1MiB");
    let log = dir.path().join("w.log");
    let metrics = free_addr();
    let mut w = writer_with(&b, &input, &group, &sink, &log, &["--metrics", &metrics]);
    wait_for_log(&log, " committed ");
    server.kill();
    let outage = Instant::now();
    // Held back, not buffering without bound: what it reads stops growing within the outage
    // (the feed goes on at 5 000 records/s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = records_in(&metrics);
    let held = loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = records_in(&metrics);
        if now == last {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "still reading after 30 s of outage ({now} records in): max_pending did not hold the writer back"
        );
        last = now;
    };
    eprintln!("catalog and store down: reading stopped at {held} records in");
    // At least 10 s down: longer than the store client's own retries.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed()));
    server.restart();
    await_rows(
        &catalog,
        &server.addr,
        &table,
        60_000,
        Duration::from_secs(120),
        &log,
    );
    assert!(wait_exit(&mut generator, Duration::from_secs(60), &gen_log).success());
    std::thread::sleep(Duration::from_secs(2));
    terminate(&mut w, &log);
    assert!(
        ["(retrying in ", "writing a data file failed"]
            .iter()
            .any(|seen| log_of(&log).contains(seen)),
        "the outage was seen and retried:\n{}",
        log_of(&log)
    );
    let t = iceberg::read_rest(&catalog, &server.addr, &table);
    assert_exactly(&t, 60_000);
}

/// Partitions assigned while the catalog does not answer: the positions cannot be loaded, so
/// the run stops with the reason instead of hanging the rebalance or writing blind.
#[test]
fn an_assignment_whose_positions_cannot_be_loaded_stops_the_run_clearly() {
    let b = broker();
    let server = s3::PrivateServer::start();
    let catalog = server.catalog();
    let (input, group, table) = (unique("ice4-in"), unique("ice4"), table("blind"));
    create_topic(&b, &input, 2);
    let dir = tempfile::tempdir().unwrap();
    let sink = iceberg::uri(&catalog, &table_path(&table), "commit=1s");
    // A long session: tansu's join takes about half of it, so the catalog is paused well
    // before the partitions are assigned.
    let source = format!("kafka://{b}/{input}?group={group}&prop.session.timeout.ms=30000");
    let log = dir.path().join("w.log");
    let mut cmd = common::runtime();
    s3::with_credentials(&mut cmd);
    let mut w = spawn_with(
        &mut cmd,
        &["run", "--source", &source, "--sink", &sink],
        &log,
    );
    wait_for_log(&log, "consuming");
    server.pause();
    let status = wait_exit(&mut w, Duration::from_secs(120), &log);
    server.resume();
    assert!(!status.success());
    let text = log_of(&log);
    let error = text
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{text}"));
    assert!(
        error.contains("cannot load the table's positions")
            && error.contains("did not answer")
            && error.contains("restart once the catalog answers"),
        "{error}"
    );
}

#[test]
fn a_bucket_of_parquet_goes_into_a_table_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let mock = plugin("mock");
    let bucket = format!(
        "file://{}?format=parquet&roll_records=1000",
        objects.display()
    );
    let made = run(
        &[
            "run",
            "--plugin",
            mock.to_str().unwrap(),
            "--rate",
            "0",
            "--count",
            "100000",
            "--sink",
            &bucket,
        ],
        b"",
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let source = format!("file://{}?format=parquet&follow=false", objects.display());
    let sink = format!(
        "iceberg+sqlite://{0}/catalog.db/raw/sessions?warehouse={0}/wh&commit=100ms",
        dir.path().display()
    );
    let args = [
        "run",
        "--source",
        &source,
        "--sink",
        &sink,
        "--batch-size",
        "100",
    ];
    // 10 000 rows/s: 10 s for the whole bucket, so a kill after the first commit is mid-way
    // on any machine.
    let log = dir.path().join("first.log");
    let mut first = spawn(&[&args[..], &["--rate", "10000"]].concat(), &log);
    wait_for_log(&log, " committed ");
    std::thread::sleep(Duration::from_millis(300));
    signal(&first, "-KILL");
    let _ = first.wait();
    let before = read_embedded(dir.path(), "raw.sessions")["rows"]
        .as_u64()
        .unwrap();
    assert!(before < 100_000, "killed mid-way: {before} rows");
    let rest = run(&args, b"");
    assert!(rest.status.success(), "{}", stderr(&rest));
    let t = read_embedded(dir.path(), "raw.sessions");
    assert_exactly(&t, 100_000);
    eprintln!("bucket -> table, kill -9 at {before} rows: 100000 rows, 0 duplicates");
}

/// stdin -> enrich -> the embedded catalog.
fn embedded(
    dir: &Path,
    table: &str,
    params: &str,
    args: &[&str],
    input: &[u8],
) -> std::process::Output {
    let sink = format!(
        "iceberg+sqlite://{}/catalog.db/{}?warehouse={}/wh&commit=200ms&{params}",
        dir.display(),
        table_path(table),
        dir.display()
    );
    let mut all = vec!["run", "--sink", &sink];
    all.extend(args);
    run(&all, input)
}

fn read_embedded(dir: &Path, table: &str) -> Value {
    iceberg::read_sqlite(
        &format!("{}/catalog.db", dir.display()),
        &format!("{}/wh", dir.display()),
        table,
    )
}

#[test]
fn the_embedded_catalog_is_read_by_pyiceberg() {
    let dir = tempfile::tempdir().unwrap();
    let enrich = plugin("enrich");
    let input = std::fs::read(data("sessions.jsonl")).unwrap();
    let n = input
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    let out = embedded(
        dir.path(),
        "analytics.sessions",
        "partition=day(timestamp)",
        &["--plugin", enrich.to_str().unwrap()],
        &input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let t = read_embedded(dir.path(), "analytics.sessions");
    assert_exactly(&t, n);
    assert!(t["sample"][0]["country"].is_string(), "{}", t["sample"]);
    assert_eq!(t["types"]["timestamp"], "timestamptz");
}

#[test]
fn records_that_do_not_fit_the_table_follow_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let t = "ns.fit";
    let ok = embedded(dir.path(), t, "", &[], b"{\"a\":1,\"s\":\"x\"}\n");
    assert!(ok.status.success(), "{}", stderr(&ok));
    let misfit = b"{\"a\":2,\"s\":\"y\"}\n{\"a\":3,\"extra\":true}\n{\"a\":4,\"s\":\"z\"}\n";

    let fail = embedded(dir.path(), t, "", &[], misfit);
    assert!(!fail.status.success());
    let e = error_line(&fail);
    assert!(e.contains("extra") && e.contains("evolve=true"), "{e}");

    let skip = embedded(dir.path(), t, "", &["--on-error", "skip"], misfit);
    assert!(skip.status.success(), "{}", stderr(&skip));
    let dlq = dir.path().join("dlq");
    let dlq_uri = format!("file://{}?format=jsonl", dlq.display());
    let routed = embedded(
        dir.path(),
        t,
        "",
        &["--on-error", "dlq", "--dlq", &dlq_uri],
        misfit,
    );
    assert!(routed.status.success(), "{}", stderr(&routed));
    let dead: String = std::fs::read_dir(&dlq)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(dead.contains("extra"), "{dead}");

    let table = read_embedded(dir.path(), t);
    // 1 + (fail: the first record of the batch may have landed before the failure is not
    // assumed: count what is there) — skip and dlq each add the two that fit.
    let rows = table["rows"].as_u64().unwrap();
    assert!((5..=7).contains(&rows), "{rows} rows");
    assert!(!table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "extra"));

    let evolved = embedded(
        dir.path(),
        t,
        "evolve=true",
        &[],
        b"{\"a\":5,\"extra\":true}\n",
    );
    assert!(evolved.status.success(), "{}", stderr(&evolved));
    let table = read_embedded(dir.path(), t);
    assert_eq!(table["types"]["extra"], "boolean", "{}", table["types"]);
    assert_eq!(table["rows"].as_u64().unwrap(), rows + 1);
}

/// Under `fail` a record the table refuses stops the run before anything of it or after it is
/// committed: the table's positions never pass it, so after the fix (evolve=true) a restart
/// reads it again and it lands, once.
#[test]
fn a_record_the_table_refuses_under_fail_is_read_again_after_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let examples = dir.path().join("examples.jsonl");
    std::fs::write(&examples, "{\"session_id\":\"s\",\"n\":0}\n").unwrap();
    let rows: String = (0..100)
        .map(|n| match n {
            50 => format!("{{\"session_id\":\"s{n}\",\"n\":{n},\"extra\":\"new\"}}\n"),
            _ => format!("{{\"session_id\":\"s{n}\",\"n\":{n}}}\n"),
        })
        .collect();
    std::fs::write(objects.join("part-0.jsonl"), rows).unwrap();
    let source = format!("file://{}?format=jsonl&follow=false", objects.display());
    let sink = |params: &str| {
        format!(
            "iceberg+sqlite://{0}/catalog.db/raw/refused?warehouse={0}/wh&schema={1}{params}",
            dir.path().display(),
            examples.display()
        )
    };
    let first = run(&["run", "--source", &source, "--sink", &sink("")], b"");
    assert!(!first.status.success());
    let e = error_line(&first);
    assert!(
        e.contains("part-0.jsonl#50") && e.contains("evolve=true"),
        "{e}"
    );
    let t = read_embedded(dir.path(), "raw.refused");
    assert_exactly(&t, 50);

    let fixed = run(
        &["run", "--source", &source, "--sink", &sink("&evolve=true")],
        b"",
    );
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    let t = read_embedded(dir.path(), "raw.refused");
    assert_exactly(&t, 100);
}

/// `evolve=true` adds flat new fields as columns; a nested one cannot be a column, so the
/// records carrying it fail on their own (by `--on-error`), naming the field and the fix.
#[test]
fn a_nested_new_field_fails_only_its_record_under_evolve() {
    let dir = tempfile::tempdir().unwrap();
    let t = "ns.nested";
    let first = embedded(dir.path(), t, "", &[], b"{\"a\":1}\n");
    assert!(first.status.success(), "{}", stderr(&first));
    let input =
        b"{\"a\":2,\"city\":\"Oslo\"}\n{\"a\":3,\"device\":{\"os\":\"linux\"}}\n{\"a\":4}\n";

    let fail = embedded(dir.path(), t, "evolve=true", &[], input);
    assert!(!fail.status.success());
    let e = error_line(&fail);
    assert!(
        e.contains("stdin:2") && e.contains("`device`") && e.contains("by hand"),
        "{e}"
    );
    let skip = embedded(dir.path(), t, "evolve=true", &["--on-error", "skip"], input);
    assert!(skip.status.success(), "{}", stderr(&skip));
    let table = read_embedded(dir.path(), t);
    assert_eq!(table["types"]["city"], "string", "{}", table["types"]);
    assert!(table["types"].get("device").is_none(), "{}", table["types"]);
    // 1, then under fail the record before the nested one, then under skip the two that fit.
    assert_eq!(table["rows"], 4);
}

/// A writer that meets records with a field another writer has since added as a column loads
/// the table again and writes them, instead of refusing them.
#[test]
fn columns_another_writer_added_are_taken_up() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let t = "ns.shared";
    let sink = format!(
        "iceberg+sqlite://{0}/catalog.db/ns/shared?warehouse={0}/wh&commit=100ms",
        dir.path().display()
    );
    let log = dir.path().join("b.log");
    let mut b = common::runtime()
        .args(["run", "--sink", &sink])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut to_b = b.stdin.take().unwrap();
    to_b.write_all(b"{\"a\":1}\n").unwrap();
    to_b.flush().unwrap();
    wait_for_log(&log, " committed ");
    let a = embedded(
        dir.path(),
        t,
        "evolve=true",
        &[],
        b"{\"a\":2,\"city\":\"Oslo\"}\n",
    );
    assert!(a.status.success(), "{}", stderr(&a));
    to_b.write_all(b"{\"a\":3,\"city\":\"Rome\"}\n").unwrap();
    drop(to_b);
    let status = wait_exit(&mut b, Duration::from_secs(60), &log);
    assert!(status.success(), "{}", log_of(&log));
    let table = read_embedded(dir.path(), t);
    assert_eq!(table["rows"], 3);
}

/// A writer that found no table at start, and creates it on its first batch after another
/// process did (and committed), passes over what that process committed.
#[test]
fn a_table_another_process_created_first_keeps_its_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (a_objects, b_objects) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_objects).unwrap();
    std::fs::create_dir_all(&b_objects).unwrap();
    let sink = format!(
        "iceberg+sqlite://{0}/catalog.db/raw/first?warehouse={0}/wh&commit=100ms",
        dir.path().display()
    );
    let source = |objects: &Path, follow: bool| {
        format!(
            "file://{}?format=jsonl&follow={follow}&poll=100ms",
            objects.display()
        )
    };
    // B opens first, on an empty directory: no table yet.
    let b_log = dir.path().join("b.log");
    let b_source = source(&b_objects, true);
    let mut b = spawn(
        &[
            "run",
            "--source",
            &b_source,
            "--sink",
            &sink,
            "--progress-secs",
            "1",
        ],
        &b_log,
    );
    wait_for_log(&b_log, "object source ready");
    // A creates the table and commits every row of part-0.jsonl.
    let rows: String = (0..100)
        .map(|n| format!("{{\"session_id\":\"s{n}\"}}\n"))
        .collect();
    std::fs::write(a_objects.join("part-0.jsonl"), &rows).unwrap();
    let a = run(
        &[
            "run",
            "--source",
            &source(&a_objects, false),
            "--sink",
            &sink,
        ],
        b"",
    );
    assert!(a.status.success(), "{}", stderr(&a));
    // Then B meets the same object: every row is already in the table.
    let staged = dir.path().join("part-0.jsonl");
    std::fs::write(&staged, &rows).unwrap();
    std::fs::rename(&staged, b_objects.join("part-0.jsonl")).unwrap();
    wait_for_log(&b_log, "records_in=100");
    signal(&b, "-TERM");
    let status = wait_exit(&mut b, Duration::from_secs(60), &b_log);
    assert!(status.success(), "{}", log_of(&b_log));
    assert_exactly(&read_embedded(dir.path(), "raw.first"), 100);
}

#[test]
fn bad_table_settings_fail_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = iceberg::catalog();
    let examples = dir.path().join("examples.jsonl");
    std::fs::write(&examples, "{\"a\":1,\"b\":\"x\",\"c\":2.5}\n").unwrap();
    let made = embedded(dir.path(), "ns.t", "", &[], b"{\"a\":1}\n");
    assert!(made.status.success(), "{}", stderr(&made));
    let sqlite = |params: &str| {
        format!(
            "iceberg+sqlite://{}/catalog.db/ns/t?warehouse={}/wh&{params}",
            dir.path().display(),
            dir.path().display()
        )
    };
    for (sink, says) in [
        (
            "iceberg://127.0.0.1:1/ns/t?warehouse=warehouse".to_owned(),
            "the catalog does not answer",
        ),
        (
            format!("iceberg://{catalog}/ns/t?warehouse=warehouse&credential=admin:wrong"),
            "refused the credentials",
        ),
        (
            format!(
                "iceberg://{catalog}/ns/t?warehouse=no-such-warehouse&credential=admin:password"
            ),
            "warehouse",
        ),
        (
            sqlite(&format!("schema={}", examples.display())),
            "exists without the columns b, c",
        ),
        (sqlite("partition=day(a)"), "exists partitioned by []"),
        (
            format!(
                "iceberg+sqlite://{}/other.db/ns/t?warehouse={}/wh2&partition=day(nope)",
                dir.path().display(),
                dir.path().display()
            ),
            "`nope` is not a column",
        ),
    ] {
        let out = run(&["run", "--sink", &sink], b"{\"a\":1}\n");
        assert!(!out.status.success(), "{sink}");
        let e = error_line(&out);
        assert!(e.contains(says), "{sink}: {e}");
    }
}
