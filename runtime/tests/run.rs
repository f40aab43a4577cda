//! `runtime run` and `runtime inspect` on the real plugins, through the real binary.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

fn ids(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .map(|v| v["session_id"].as_str().expect("session_id").to_owned())
        .collect()
}

#[test]
fn mock_writes_count_sessions_then_exits_zero() {
    let mock = plugin("mock");
    let out = run(
        &[
            "run",
            "--plugin",
            mock.to_str().unwrap(),
            "--count",
            "2000",
            "--rate",
            "0",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 2000);
    for v in &lines {
        for field in [
            "user_id",
            "device_id",
            "device_type",
            "operating_system",
            "app_version",
            "timestamp",
            "session_duration",
            "clicks",
            "views",
            "latitude",
            "longitude",
            "events",
        ] {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
        assert!(v["timestamp"].is_i64());
    }
    assert_eq!(
        ids(&lines).into_iter().collect::<HashSet<_>>().len(),
        2000,
        "session ids repeat"
    );
    assert!(
        stderr(&out).contains("records_out=2000"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_reaches_init_and_a_seed_makes_output_deterministic() {
    let mock = plugin("mock");
    let gen = |seed: &str| {
        let cfg = format!("seed={seed}");
        let out = run(
            &[
                "run",
                "--plugin",
                mock.to_str().unwrap(),
                "--count",
                "300",
                "--rate",
                "0",
                "--set",
                &cfg,
            ],
            b"",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        ids(&json_lines(&stdout(&out)))
    };
    assert_eq!(gen("42"), gen("42"));
    assert_ne!(gen("42"), gen("43"));
}

#[test]
fn rate_paces_any_source() {
    let mock = plugin("mock");
    let started = Instant::now();
    let out = run(
        &[
            "run",
            "--plugin",
            mock.to_str().unwrap(),
            "--count",
            "30",
            "--rate",
            "100",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out)).len(), 30);
    // 30 records at 100/s cannot be done in much less than 0.3 s (a lower bound only: slow
    // machines make it longer, never shorter).
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "30 records at 100/s took {:?}",
        started.elapsed()
    );
    // Any source, not only a source plugin: stdin too (a bucket or a topic alike).
    let started = Instant::now();
    let out = run(&["run", "--rate", "1000"], numbered_lines(300).as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out)).len(), 300);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "300 lines at 1000/s took {:?}",
        started.elapsed()
    );
}

/// A running pipeline logs its counters while records flow, and stays quiet with 0.
#[test]
fn progress_is_logged_while_records_flow() {
    let mock = plugin("mock");
    let run_with = |every: &str| {
        let out = run(
            &[
                "run",
                "--plugin",
                mock.to_str().unwrap(),
                "--count",
                "250",
                "--rate",
                "100",
                "--progress-secs",
                every,
            ],
            b"",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(json_lines(&stdout(&out)).len(), 250);
        stderr(&out)
    };
    let logged = run_with("1");
    let lines: Vec<&str> = logged.lines().filter(|l| l.contains("progress:")).collect();
    // 2.5 s of records at one line a second; a slow machine only makes more.
    assert!(lines.len() >= 2, "{logged}");
    assert!(lines[0].contains("records/s in"), "{logged}");
    assert!(lines[0].contains("records_out="), "{logged}");
    assert!(!run_with("0").contains("progress:"));
}

#[test]
fn enrich_matches_the_golden_file() {
    let input = std::fs::read(data("sessions.jsonl")).unwrap();
    let expected = std::fs::read_to_string(data("sessions.enriched.jsonl")).unwrap();
    for enrich in [plugin("enrich"), component_plugin("enrich")] {
        let out = run(&["run", "--plugin", enrich.to_str().unwrap()], &input);
        assert!(
            out.status.success(),
            "{}: {}",
            enrich.display(),
            stderr(&out)
        );
        assert_eq!(stdout(&out), expected, "{}", enrich.display());
    }
}

#[test]
fn plugins_chain_in_one_process() {
    let (mock, enrich) = (plugin("mock"), plugin("enrich"));
    let out = run(
        &[
            "run",
            "--plugin",
            mock.to_str().unwrap(),
            "--plugin",
            enrich.to_str().unwrap(),
            "--count",
            "1000",
            "--rate",
            "0",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 1000);
    let mut greece = 0;
    for v in &lines {
        let in_greece = v["latitude"] == 39.0 && v["longitude"] == 22.0;
        assert_eq!(
            v["status"],
            if in_greece { "accepted" } else { "rejected" },
            "{v}"
        );
        assert_ne!(v["country"], "Unknown", "{v}");
        assert_eq!(v["timestamp"].as_str().map(str::len), Some(24), "{v}");
        greece += usize::from(in_greece);
    }
    assert!(
        (350..650).contains(&greece),
        "{greece} of 1000 sessions in Greece"
    );
}

#[test]
fn both_build_paths_give_working_plugins() {
    // The mock built by cargo-component (wasip1 + adapter) and by the wasip2 target: same code,
    // same sessions for the same seed.
    let gen = |mock: std::path::PathBuf| {
        let out = run(
            &[
                "run",
                "--plugin",
                mock.to_str().unwrap(),
                "--count",
                "50",
                "--rate",
                "0",
                "--set",
                "seed=9",
            ],
            b"",
        );
        assert!(out.status.success(), "{}: {}", mock.display(), stderr(&out));
        ids(&json_lines(&stdout(&out)))
    };
    assert_eq!(gen(plugin("mock")), gen(component_plugin("mock")));
    let out = runtime()
        .args(["inspect", component_plugin("enrich").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("world:   transform"));
}

#[test]
fn inspect_shows_world_exports_size_and_sha256() {
    let path = plugin("enrich");
    let bytes = std::fs::read(&path).unwrap();
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = runtime()
        .args(["inspect", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("world:   transform (sluice:plugin@0.1.0)"),
        "{text}"
    );
    assert!(text.contains(&format!("sha256:  {sha}")), "{text}");
    assert!(
        text.contains(&format!("size:    {} bytes", bytes.len())),
        "{text}"
    );
    assert!(
        text.contains("process: func(batch: list<u8>) -> result<list<u8>, string>"),
        "{text}"
    );
    assert!(text.contains("sluice:plugin/host@0.1.0"), "{text}");

    let out = runtime()
        .args(["inspect", plugin("mock").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("world:   source"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("next: func(max: u32, now-ms: s64)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mock = plugin("mock");
    let child = runtime()
        .args(["run", "--plugin", mock.to_str().unwrap(), "--rate", "2000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.ends_with('\n'), "last record half-written");
    let lines = json_lines(&text);
    assert!(!lines.is_empty());
    assert!(
        stderr(&out).contains(&format!("records_out={}", lines.len())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    use std::io::BufRead;
    let mock = plugin("mock");
    let mut child = runtime()
        .args(["run", "--plugin", mock.to_str().unwrap(), "--rate", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here, like `| head -1`.
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(first.starts_with("{\"session_id\""));
}

/// Enough JSON lines that every worker of a spread stdin has batches in flight.
fn numbered_lines(n: usize) -> String {
    (0..n).map(|i| format!("{{\"n\":{i}}}\n")).collect()
}

#[test]
fn a_closed_stdout_ends_a_spread_stdin_quietly() {
    use std::io::{BufRead, Write};
    let testkit = plugin("testkit");
    let mut child = runtime()
        .args([
            "run",
            "--plugin",
            testkit.to_str().unwrap(),
            "--workers",
            "2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(numbered_lines(200_000).as_bytes());
    });
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here, like `| head -1`, while the other worker waits its turn.
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
    assert_eq!(first, "{\"n\":0}\n");
}

/// Under `fail` the error reported is the bad record's, not what it did to the other workers.
#[test]
fn the_first_error_is_reported_whichever_worker_meets_it() {
    let testkit = plugin("testkit");
    let mut input = numbered_lines(50_000);
    input.push_str("{oops\n");
    input.push_str(&numbered_lines(150_000));
    let out = run(
        &[
            "run",
            "--plugin",
            testkit.to_str().unwrap(),
            "--workers",
            "2",
        ],
        input.as_bytes(),
    );
    assert!(!out.status.success());
    let error = error_line(&out);
    assert!(
        error.contains("record stdin:50001: invalid JSON") && error.contains("--on-error skip"),
        "{error}"
    );
    let lines = json_lines(&stdout(&out));
    assert_eq!(
        lines.len(),
        50_000,
        "the records before the bad one, and only those"
    );
    assert_eq!(lines[49_999]["n"], 49_999);
}

/// stdin is one ordered stream, yet its batches are spread over the workers (plugin calls in
/// parallel): the outputs still leave in input order, filtered and doubled records included.
#[test]
fn stdin_spread_over_workers_keeps_its_order() {
    let mut input = String::new();
    let mut expected = Vec::new();
    for n in 0..30_000 {
        match n % 1000 {
            17 => input.push_str("\"DROP\"\n"),
            500 => {
                input.push_str("\"TWICE\"\n");
                expected.extend(["\"TWICE\"".to_owned(), "\"TWICE\"".to_owned()]);
            }
            _ => {
                let line = format!("{{\"n\":{n}}}");
                input.push_str(&line);
                input.push('\n');
                expected.push(line);
            }
        }
    }
    let testkit = plugin("testkit");
    for workers in ["1", "2", "3"] {
        let out = run(
            &[
                "run",
                "--workers",
                workers,
                "--batch-size",
                "7",
                "--plugin",
                testkit.to_str().unwrap(),
            ],
            input.as_bytes(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), expected.len(), "--workers {workers}");
        assert!(
            lines == expected,
            "--workers {workers}: outputs out of order"
        );
    }
    // A record failing late under `fail` stops every worker (none waits for a turn that will
    // not come), and what came before it is out, in order.
    let failing = input.replacen("{\"n\":25000}", "\"FAIL here\"", 1);
    let started = Instant::now();
    let out = run(
        &[
            "run",
            "--workers",
            "2",
            "--batch-size",
            "7",
            "--plugin",
            testkit.to_str().unwrap(),
        ],
        failing.as_bytes(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("testkit refused FAIL here"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // The failed record's batch neighbours are written; it is not.
    let without: Vec<&String> = expected.iter().filter(|l| *l != "{\"n\":25000}").collect();
    let text = stdout(&out);
    let out_lines: Vec<&str> = text.lines().collect();
    assert!(out_lines.len() < without.len());
    assert!(
        out_lines.iter().zip(&without).all(|(a, b)| a == b),
        "the outputs before the failure are not a prefix of the input's order"
    );
}
