//! Shadow runs on a Kafka stream (tansu): a candidate version sees every batch the live one
//! does, its outputs are compared and never written, and promoting it swaps it in with nothing
//! lost or doubled.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::kafka::{self, create_topic, produce, read_topic_with, unique};
use common::process::{admin, free_addr, log_of, spawn_with, terminate, wait_for_admin};
use common::{plugin, runtime};
use serde_json::Value;

/// Puts `n` mock sessions into `topic`.
fn fill(broker: &str, topic: &str, n: u64) {
    let out = runtime()
        .args(["run", "--plugin", plugin("mock").to_str().unwrap()])
        .args(["--rate", "0", "--count", &n.to_string()])
        .args(["--sink", &kafka::sink_uri(broker, topic)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every value in `topic`, once `expected` are there.
fn values(broker: &str, topic: &str, expected: usize) -> Vec<Vec<u8>> {
    read_topic_with(
        broker,
        topic,
        expected,
        Duration::from_secs(2),
        Duration::from_secs(120),
        |m| {
            use rdkafka::message::Message;
            m.payload().unwrap_or_default().to_vec()
        },
    )
}

/// The shadow's report once it has caught up with an input that stopped: the same batches
/// counted (compared or skipped) twice in a row, half a second apart.
fn settled_report(addr: &str, slot: &str, log: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    loop {
        let (status, report) = admin(
            addr,
            "GET",
            &format!("/pipelines/main/plugins/{slot}/shadow"),
            None,
        );
        assert_eq!(status, 200, "{report}");
        let counted = |r: &Value| (r["batches"].clone(), r["skipped_batches"].clone());
        if report["batches"].as_u64() > Some(0) && counted(&report) == counted(&last) {
            return report;
        }
        assert!(Instant::now() < deadline, "{report}\n{}", log_of(log));
        last = report;
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_shadow_is_compared_and_never_written_then_promoted_with_nothing_lost_or_doubled() {
    let broker = kafka::broker();
    let (input, output) = (unique("shadow-in"), unique("shadow-out"));
    create_topic(&broker, &input, 2);
    create_topic(&broker, &output, 2);
    let first = 20_000u64;
    fill(&broker, &input, first);
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = (free_addr(), dir.path().join("log"));
    let shadow = format!("enrich={}", plugin("enrich_next").display());
    let mut child = spawn_with(
        &mut runtime(),
        &[
            "run",
            "--source",
            &kafka::source_uri(&broker, &input, &unique("shadow")),
            "--plugin",
            plugin("enrich").to_str().unwrap(),
            "--sink",
            &kafka::sink_uri(&broker, &output),
            "--shadow",
            &shadow,
            "--admin",
            &addr,
        ],
        &log,
    );
    wait_for_admin(&addr);
    let live = values(&broker, &output, first as usize);
    // The live output is what enrich alone makes of the input, byte for byte.
    let alone = runtime()
        .args([
            "run",
            "--source",
            &kafka::source_uri(&broker, &input, &unique("alone")),
        ])
        .args(["--plugin", plugin("enrich").to_str().unwrap()])
        .args(["--count", &first.to_string()])
        .output()
        .unwrap();
    assert!(
        alone.status.success(),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
    let mut want: Vec<&[u8]> = alone
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut got: Vec<&[u8]> = live.iter().map(Vec::as_slice).collect();
    want.sort();
    got.sort();
    assert!(
        want == got,
        "the live output changed with a shadow beside it"
    );

    let report = settled_report(&addr, "enrich", &log);
    eprintln!("shadow report: {report}");
    let compared = report["compared"].as_u64().unwrap();
    assert_eq!(report["different"].as_u64(), Some(compared), "{report}");
    assert_eq!(report["equal"], 0, "{report}");
    assert_eq!(report["shadow_failed"], 0, "{report}");
    assert_eq!(report["live_failed"], 0, "{report}");
    assert!(
        compared + report["skipped_batches"].as_u64().unwrap() > 0 && compared <= first,
        "{report}"
    );
    let sample = report["sample"].as_array().unwrap();
    assert!(!sample.is_empty(), "{report}");
    assert!(
        sample[0]["diff"].to_string().contains("enrich_version")
            && sample[0]["shadow"][0]["enrich_version"] == 2
            && sample[0]["live"][0].get("enrich_version").is_none(),
        "{report}"
    );
    let metrics = std::process::Command::new("curl")
        .args(["-s", &format!("http://{addr}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(&format!("result=\"different\"}} {}", report["different"])),
        "{metrics}"
    );

    let (status, body) = admin(
        &addr,
        "POST",
        "/pipelines/main/plugins/enrich/shadow/promote",
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = admin(&addr, "GET", "/pipelines/main/plugins/enrich/shadow", None);
    assert_eq!(status, 404, "the shadow run ends with its promotion");
    let more = 10_000u64;
    fill(&broker, &input, more);
    let all = values(&broker, &output, (first + more) as usize);
    terminate(&mut child, &log);
    let sessions: HashSet<String> = all
        .iter()
        .map(|v| {
            let v: Value = serde_json::from_slice(v).unwrap();
            v["session_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(all.len() as u64, first + more, "lost or doubled");
    assert_eq!(sessions.len(), all.len(), "doubled");
    let tagged = all
        .iter()
        .filter(|v| String::from_utf8_lossy(v).contains(r#""enrich_version":2"#))
        .count();
    assert_eq!(
        tagged as u64, more,
        "the promoted version made every later output"
    );
}

#[test]
fn a_shadow_that_traps_never_touches_the_live_stream() {
    let broker = kafka::broker();
    let (input, output) = (unique("shadow2-in"), unique("shadow2-out"));
    create_topic(&broker, &input, 2);
    create_topic(&broker, &output, 2);
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = (free_addr(), dir.path().join("log"));
    let mut child = spawn_with(
        &mut runtime(),
        &[
            "run",
            "--source",
            &kafka::source_uri(&broker, &input, &unique("shadow2")),
            "--plugin",
            plugin("identity").to_str().unwrap(),
            "--sink",
            &kafka::sink_uri(&broker, &output),
            "--admin",
            &addr,
        ],
        &log,
    );
    wait_for_admin(&addr);
    // testkit passes words through and traps on TRAP: one record in ten.
    let (status, body) = admin(
        &addr,
        "PUT",
        "/pipelines/main/plugins/identity?shadow=true",
        Some(&plugin("testkit")),
    );
    assert_eq!(status, 200, "{body}");
    let n = 5_000;
    let records: Vec<(Option<String>, String)> = (0..n)
        .map(|i| {
            (
                None,
                if i % 10 == 0 {
                    "\"TRAP\"".into()
                } else {
                    format!("\"w{i}\"")
                },
            )
        })
        .collect();
    produce(&broker, &input, &records);
    let live = values(&broker, &output, n);
    let report = settled_report(&addr, "identity", &log);
    let (status, stopped) = admin(
        &addr,
        "DELETE",
        "/pipelines/main/plugins/identity/shadow",
        None,
    );
    assert_eq!(status, 200, "{stopped}");
    terminate(&mut child, &log);
    eprintln!("trapping shadow: {report}");
    let mut want: Vec<String> = records.iter().map(|(_, v)| v.clone()).collect();
    let mut got: Vec<String> = live
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    want.sort();
    got.sort();
    assert!(want == got, "the live output changed");
    let compared = report["compared"].as_u64().unwrap();
    let failed = report["shadow_failed"].as_u64().unwrap();
    assert!(failed > 0, "{report}");
    assert_eq!(
        report["equal"].as_u64().unwrap() + failed,
        compared,
        "{report}"
    );
    assert_eq!(report["live_failed"], 0, "{report}");
    assert!(
        report["sample"][0]["shadow"]["error"]
            .to_string()
            .contains("TRAP")
            || report["sample"][0]["shadow"]["error"]
                .to_string()
                .contains("trap"),
        "{report}"
    );
}

/// Seconds from the first `start` line of a runtime log to its last `end` line (each line
/// starts with an RFC 3339 UTC timestamp).
fn span(log: &str, start: &str, end: &str) -> f64 {
    let seconds = |line: &str| -> f64 {
        // 2026-12-06T15:41:06.123456Z: the time of day is enough for runs under a day.
        let time = &line[line.find('T').expect("a timestamp") + 1..];
        let time = &time[..time.find('Z').expect("a UTC timestamp")];
        let mut parts = time.split(':').map(|p| p.parse::<f64>().expect("a time"));
        let (h, m, s) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        h * 3600.0 + m * 60.0 + s
    };
    let first = log.lines().find(|l| l.contains(start)).map(seconds);
    let last = log.lines().rfind(|l| l.contains(end)).map(seconds);
    match (first, last) {
        (Some(first), Some(last)) => (last - first).rem_euclid(86_400.0),
        _ => panic!("no `{start}` .. `{end}` in the log:\n{log}"),
    }
}

/// The number after `name=` in `line`.
fn field(line: &str, name: &str) -> u64 {
    let at = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    line[at + name.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {name}= in {line}"))
}

/// One run of `--count n` records from `input` through identity (and `shadow` beside it), its
/// log and its outputs.
fn identity_run(
    broker: &str,
    input: &str,
    n: usize,
    shadow: Option<&Path>,
) -> (String, Vec<Vec<u8>>) {
    let output = unique("shadow3-out");
    create_topic(broker, &output, 2);
    let identity = plugin("identity");
    let mut args = vec![
        "run".to_owned(),
        "--source".into(),
        kafka::source_uri(broker, input, &unique("shadow3")),
        "--plugin".into(),
        identity.to_str().unwrap().into(),
        "--sink".into(),
        kafka::sink_uri(broker, &output),
        "--count".into(),
        n.to_string(),
        // testkit's sleeps are real only with the clock.
        "--allow".into(),
        "clock".into(),
        "--batch-deadline-ms".into(),
        "10000".into(),
    ];
    if let Some(shadow) = shadow {
        args.push("--shadow".into());
        args.push(format!("identity={}", shadow.display()));
    }
    let out = runtime().args(&args).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    (log, values(broker, &output, n))
}

#[test]
fn a_shadow_that_sleeps_never_slows_the_live_stream() {
    let broker = kafka::broker();
    let input = unique("shadow3-in");
    create_topic(&broker, &input, 2);
    // testkit sleeps 1 ms on every 20th record: ~50 ms a batch of 1 024, where the live
    // identity takes about one.
    let n = 1_000_000;
    let records: Vec<(Option<String>, String)> = (0..n)
        .map(|i| {
            let word = if i % 20 == 0 { "SLEEP" } else { "w" };
            (None, format!("\"{word}-{i}\""))
        })
        .collect();
    produce(&broker, &input, &records);
    let mut want: Vec<Vec<u8>> = records
        .iter()
        .map(|(_, v)| v.clone().into_bytes())
        .collect();
    want.sort();

    let (alone_log, mut alone) = identity_run(&broker, &input, n, None);
    let (shadowed_log, mut shadowed) = identity_run(&broker, &input, n, Some(&plugin("testkit")));
    alone.sort();
    shadowed.sort();
    assert!(
        alone == want,
        "the run without a shadow lost or changed records"
    );
    assert!(shadowed == want, "the shadow changed the live output");

    let report = shadowed_log
        .lines()
        .find(|l| l.contains("shadow run") && l.contains(" compared="))
        .unwrap_or_else(|| panic!("no shadow report in the log:\n{shadowed_log}"));
    let (compared, equal, failed) = (
        field(report, "compared"),
        field(report, "equal"),
        field(report, "shadow_failed"),
    );
    // The live stream finished while the shadow had seen only part of it: it did not wait.
    assert!(field(report, "skipped_batches") > 0, "{report}");
    assert!(compared < n as u64, "{report}");
    assert_eq!(equal + failed, compared, "{report}");
    assert!(field(report, "different") == 0, "{report}");
    // Records/s from the first record read to the last output acknowledged: reported, not
    // asserted (a shared machine swings by more than the 10 % the shadow is allowed).
    let rate = |log: &str| n as f64 / span(log, "first records read", "every output durable");
    let (alone_rate, shadowed_rate) = (rate(&alone_log), rate(&shadowed_log));
    eprintln!(
        "sleeping shadow: {alone_rate:.0} records/s without, {shadowed_rate:.0} with \
         ({:.1} %); {report}",
        100.0 * shadowed_rate / alone_rate
    );
}
