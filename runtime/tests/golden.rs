//! `runtime test`: the shipped plugins pass their golden cases, the Python and JavaScript enrich
//! plugins pass the Rust one's, differences are shown and fail the run, bad case files get clear
//! errors.

mod common;

use std::path::{Path, PathBuf};

use common::{error_line, guest_plugin, plugin, run, stdout};

fn cases(plugin: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(plugin)
        .join("tests/cases")
}

fn test(plugin: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["test", "--plugin", plugin.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    run(&all, b"")
}

/// `runtime test --input in.jsonl --expect out.jsonl` on these two texts.
fn test_pair(plugin: &Path, input: &str, expected: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let (i, e) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&i, input).unwrap();
    std::fs::write(&e, expected).unwrap();
    test(
        plugin,
        &[
            "--input",
            i.to_str().unwrap(),
            "--expect",
            e.to_str().unwrap(),
        ],
    )
}

fn passes(plugin: &Path, cases: &Path, records: usize) {
    let out = test(plugin, &["--cases", cases.to_str().unwrap()]);
    let report = stdout(&out);
    assert!(
        out.status.success(),
        "{} on {}:\n{report}\n{}",
        plugin.display(),
        cases.display(),
        common::stderr(&out)
    );
    assert!(
        report.contains("record(s), 0 differ") && report.contains(&format!(" {records} record(s)")),
        "{report}"
    );
}

#[test]
fn shipped_plugins_pass_their_golden_cases() {
    passes(&plugin("enrich"), &cases("enrich"), 27);
    passes(&plugin("producer"), &cases("producer"), 15);
    // The mock source, with a fixed seed per case (NAME.settings) and the harness's clock.
    passes(&plugin("mock"), &cases("mock"), 40);
    // Built with cargo-component, the same cases hold.
    passes(&common::component_plugin("enrich"), &cases("enrich"), 27);
    // Stateful plugins: windows closed by event time, ids forgotten as time advances.
    passes(&plugin("rollup"), &cases("rollup"), 9);
    passes(&plugin("dedup"), &cases("dedup"), 8);
}

#[test]
fn python_and_javascript_enrich_pass_the_rust_cases() {
    passes(&guest_plugin("enrich-py"), &cases("enrich"), 27);
    passes(&guest_plugin("enrich-js"), &cases("enrich"), 27);
    // The stateful world in Python: the rollup's cases, window by window.
    passes(&guest_plugin("rollup-py"), &cases("rollup"), 9);
}

#[test]
fn a_difference_fails_with_a_diff_of_the_first_records() {
    // enrich_next adds a field: every session differs, errors still match.
    let out = test(
        &plugin("enrich_next"),
        &["--cases", cases("enrich").to_str().unwrap(), "--show", "2"],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = stdout(&out);
    assert!(report.contains("errors: 8 record(s) ok"), "{report}");
    assert!(
        report.contains("sessions: FAILED, 19 of 19 record(s) differ"),
        "{report}"
    );
    assert!(
        report.contains(
            "    sessions.input.jsonl:1 (expected at sessions.expected.jsonl:1):\n      $.enrich_version: not expected, got 2\n"
        ),
        "{report}"
    );
    assert!(report.contains("... and 17 more"), "{report}");
    assert_eq!(
        error_line(&out),
        "error: 19 of 27 record(s) differ from the expected ones"
    );

    // identity returns records unchanged where errors are expected, and a value that differs.
    let out = test_pair(
        &plugin("identity"),
        "{\"a\":1,\"b\":[1,2]}\n{\"a\":2}\n\"x\"\n",
        "{\"a\":1.0,\"b\":[1,3]}\n{\"$error\":\"boom\"}\n{\"$outputs\":[]}\n",
    );
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for line in [
        "in.jsonl:1 (expected at out.jsonl:1):\n      $.b[1]: expected 3, got 2\n",
        "in.jsonl:2 (expected at out.jsonl:2):\n      expected an error containing \"boom\", got 1 output(s), the first: {\"a\":2}\n",
        "in.jsonl:3 (expected at out.jsonl:3):\n      expected 0 output(s), got 1\n",
    ] {
        assert!(report.contains(line), "{line}\nnot in\n{report}");
    }
}

#[test]
fn keys_headers_timestamps_and_traps_are_checked() {
    // testkit: TWICE flat-maps, DROP filters, FAIL is a per-record error, TRAP fails its batch
    // (the harness reruns the batch record by record, so only that record fails).
    let out = test_pair(
        &plugin("testkit"),
        &[
            r#"{"$text":"TWICE","$key":"k","$headers":{"h":"v"},"$timestamp_ms":5}"#,
            r#""DROP""#,
            r#""FAIL here""#,
            r#""TRAP""#,
            r#"{"$value":"kept","$key":"k2"}"#,
        ]
        .join("\n"),
        &[
            r#"{"$outputs":[{"$text":"TWICE","$key":"k","$headers":{"h":"v"},"$timestamp_ms":5},{"$text":"TWICE","$key":"k"}]}"#,
            r#"{"$outputs":[]}"#,
            r#"{"$error":"FAIL here"}"#,
            r#"{"$error":"trapped"}"#,
            r#"{"$value":"kept","$key":"other","$headers":{}}"#,
        ]
        .join("\n"),
    );
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("1 of 5 record(s) differ"), "{report}");
    assert!(
        report.contains("in.jsonl:5 (expected at out.jsonl:5):\n      key: expected Some(\"other\"), got Some(\"k2\")\n"),
        "{report}"
    );
}

#[test]
fn bless_records_the_current_outcomes_and_they_then_pass() {
    let dir = tempfile::tempdir().unwrap();
    let src = cases("producer");
    for f in [
        "rows.input.jsonl",
        "errors.input.jsonl",
        "by_device.input.jsonl",
        "by_device.settings",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let out = test(&plugin("producer"), &["--cases", d, "--bless"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(stdout(&out).contains("rows: 7 record(s) written to"));
    passes(&plugin("producer"), dir.path(), 15);
    // The settings of a case reach init: keyed by device, not user.
    let blessed = std::fs::read_to_string(dir.path().join("by_device.expected.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(blessed.lines().next().unwrap()).unwrap();
    assert_eq!(first["$key"], first["$value"]["device_id"]);

    // A source without an expected file records --count records.
    let mock_dir = tempfile::tempdir().unwrap();
    std::fs::write(mock_dir.path().join("s.settings"), "seed=1\n").unwrap();
    let m = mock_dir.path().to_str().unwrap();
    let out = test(&plugin("mock"), &["--cases", m, "--bless", "--count", "7"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    passes(&plugin("mock"), mock_dir.path(), 7);
}

#[test]
fn bad_case_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    let path = |name: &str| d.join(name).to_str().unwrap().to_owned();
    let enrich = plugin("enrich");

    let out = test(&enrich, &["--cases", &path("")]);
    assert!(
        error_line(&out).contains("has no cases: add NAME.input.jsonl with NAME.expected.jsonl"),
        "{}",
        error_line(&out)
    );

    write("a.input.jsonl", "{}\n{}\n");
    let out = test(&enrich, &["--cases", &path("")]);
    assert!(
        error_line(&out).contains("a.expected.jsonl"),
        "{}",
        error_line(&out)
    );

    write("a.expected.jsonl", "{\"$error\":\"x\"}\n");
    let out = test(&enrich, &["--cases", &path("")]);
    assert!(
        error_line(&out)
            .contains("has 1 line(s) for 2 input line(s); give one expected line per input"),
        "{}",
        error_line(&out)
    );

    write("a.expected.jsonl", "{\"$error\":\"x\"}\nnot json\n");
    let out = test(&enrich, &["--cases", &path("")]);
    assert!(
        error_line(&out).contains("a.expected.jsonl:2: not JSON; an expected line is"),
        "{}",
        error_line(&out)
    );

    write(
        "a.expected.jsonl",
        "{\"$error\":\"x\"}\n{\"$value\":1,\"$headers\":{\"h\":1}}\n",
    );
    let out = test(&enrich, &["--cases", &path("")]);
    assert!(
        error_line(&out).contains("a.expected.jsonl:2: header `h` must be a string"),
        "{}",
        error_line(&out)
    );

    // A source plugin takes no input; a transform needs one.
    let out = test(&plugin("mock"), &["--cases", &path("")]);
    assert!(
        error_line(&out).contains("is a source plugin: it takes no input"),
        "{}",
        error_line(&out)
    );
    std::fs::remove_file(d.join("a.input.jsonl")).unwrap();
    let out = test(&enrich, &["--cases", &path("")]);
    assert!(
        error_line(&out).contains("is a transform plugin: it needs a.input.jsonl"),
        "{}",
        error_line(&out)
    );

    write("a.settings", "seed\n");
    let out = test(&plugin("mock"), &["--cases", &path("")]);
    assert!(
        error_line(&out).contains("a.settings:1: `seed` is not a `key=value` line"),
        "{}",
        error_line(&out)
    );
    write("a.settings", "seed=abc\n");
    let out = test(&plugin("mock"), &["--cases", &path("")]);
    assert!(
        error_line(&out).contains("seed=abc"),
        "{}",
        error_line(&out)
    );
}
