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
