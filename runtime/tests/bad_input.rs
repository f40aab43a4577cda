//! Every bad input gets one clear line on stderr that names the thing, a non-zero exit, and no
//! output record lost or half-written.

mod common;

use common::*;

fn fails_with(args: &[&str], input: &[u8], expected: &[&str]) -> std::process::Output {
    let out = run(args, input);
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        stderr(&out)
    );
    let line = error_line(&out);
    for part in expected {
        assert!(line.contains(part), "error line {line:?} lacks {part:?}");
    }
    out
}

#[test]
fn missing_plugin_file() {
    fails_with(
        &["run", "--plugin", "no/such/plugin.wasm"],
        b"",
        &["no/such/plugin.wasm", "not found", "wasm32-wasip2"],
    );
}

#[test]
fn a_file_that_is_not_wasm() {
    let path = data("sessions.jsonl");
    fails_with(
        &["run", "--plugin", path.to_str().unwrap()],
        b"",
        &["sessions.jsonl", "is not a WebAssembly file"],
    );
}

#[test]
fn a_core_module_that_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap(); // the smallest valid core module
    fails_with(
        &["run", "--plugin", path.to_str().unwrap()],
        b"",
        &[
            "core.wasm",
            "core WebAssembly module, not a component",
            "wasm32-wasip2",
        ],
    );
}

#[test]
fn a_component_of_the_wrong_world() {
    let path = plugin("not-a-plugin");
    fails_with(
        &["run", "--plugin", path.to_str().unwrap()],
        b"",
        &["not-a-plugin.wasm", "not a Sluice plugin", "wasi:cli/run"],
    );
    let out = runtime()
        .args(["inspect", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stdout(&out).contains("world:   none"), "{}", stdout(&out));
}

#[test]
fn a_source_plugin_after_a_transform() {
    let (enrich, mock) = (plugin("enrich"), plugin("mock"));
    fails_with(
        &[
            "run",
            "--plugin",
            enrich.to_str().unwrap(),
            "--plugin",
            mock.to_str().unwrap(),
        ],
        b"",
        &["mock.wasm", "only the first plugin may be a source"],
    );
}

#[test]
fn init_returning_an_error() {
    let testkit = plugin("testkit");
    fails_with(
        &[
            "run",
            "--plugin",
            testkit.to_str().unwrap(),
            "--set",
            "fail_init=no database for you",
        ],
        b"",
        &["testkit.wasm", "refused its config", "no database for you"],
    );
    let mock = plugin("mock");
    fails_with(
        &[
            "run",
            "--plugin",
            mock.to_str().unwrap(),
            "--set",
            "seed=abc",
        ],
        b"",
        &["mock.wasm", "seed=abc"],
    );
}

#[test]
fn bad_command_line_values() {
    let mock = plugin("mock");
    fails_with(
        &["run", "--plugin", mock.to_str().unwrap(), "--set", "seed"],
        b"",
        &["KEY=VALUE"],
    );
    fails_with(
        &["run", "--plugin", mock.to_str().unwrap(), "--rate=-1"],
        b"",
        &["-1", "is not a rate"],
    );
}

const GOOD: &str = r#"{"latitude":39.0,"longitude":22.0,"timestamp":0}"#;

#[test]
fn malformed_json_names_the_line_and_keeps_what_came_before() {
    let enrich = plugin("enrich");
    let input = format!("{GOOD}\n{GOOD}\n{{\"latitude\": 39.0,\n{GOOD}\n");
    let out = fails_with(
        &["run", "--plugin", enrich.to_str().unwrap()],
        input.as_bytes(),
        &["stdin:3", "invalid JSON", "--on-error skip"],
    );
    let written = stdout(&out);
    assert_eq!(
        json_lines(&written).len(),
        2,
        "the two records before the bad line are written"
    );
    assert!(written.ends_with('\n'));

    let out = run(
        &[
            "run",
            "--plugin",
            enrich.to_str().unwrap(),
            "--on-error",
            "skip",
        ],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out)).len(), 3);
    assert!(
        stderr(&out).contains("skipped record stdin:3: invalid JSON"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("records_failed=1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_record_the_plugin_rejects() {
    let enrich = plugin("enrich");
    let input = format!("{GOOD}\n{{\"latitude\":1}}\n{GOOD}\n");
    let out = fails_with(
        &["run", "--plugin", enrich.to_str().unwrap()],
        input.as_bytes(),
        &["stdin:2", "enrich.wasm", "field `longitude` is missing"],
    );
    assert_eq!(json_lines(&stdout(&out)).len(), 1);
}

#[test]
fn a_trap_fails_with_the_panic_message_and_keeps_earlier_outputs() {
    let testkit = plugin("testkit");
    let out = fails_with(
        &["run", "--plugin", testkit.to_str().unwrap()],
        b"\"a\"\n\"b\"\n\"TRAP\"\n\"c\"\n",
        &[
            "record stdin:3",
            "testkit.wasm trapped",
            "testkit was asked to trap",
        ],
    );
    assert_eq!(stdout(&out), "\"a\"\n\"b\"\n");
}

#[test]
fn endless_loops_and_memory_bombs_are_stopped() {
    let testkit = plugin("testkit");
    let t = testkit.to_str().unwrap();
    fails_with(
        &["run", "--plugin", t, "--batch-deadline-ms", "200"],
        b"\"LOOP\"\n",
        &["stdin:1", "batch deadline of 200ms"],
    );
    fails_with(
        &["run", "--plugin", t, "--memory-limit-mib", "32"],
        b"\"OOM\"\n",
        &["stdin:1", "memory limit of 32 MiB"],
    );
}

#[test]
fn skip_isolates_each_poison_record_and_keeps_its_neighbours() {
    let testkit = plugin("testkit");
    let mut input = String::new();
    let mut expected = Vec::new();
    for i in 0..600 {
        let value = match i {
            17 => "\"TRAP\"".to_string(),
            300 => "\"LOOP\"".to_string(),
            301 => "\"OOM\"".to_string(),
            450 => "\"FAIL here\"".to_string(),
            _ => {
                expected.push(format!("{i}"));
                format!("{i}")
            }
        };
        input.push_str(&value);
        input.push('\n');
    }
    let out = run(
        &[
            "run",
            "--plugin",
            testkit.to_str().unwrap(),
            "--on-error",
            "skip",
            "--batch-deadline-ms",
            "200",
            "--memory-limit-mib",
            "32",
        ],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        expected,
        "every good record, in order"
    );
    let err = stderr(&out);
    for line in ["stdin:18", "stdin:301", "stdin:302", "stdin:451"] {
        assert!(
            err.contains(&format!("skipped record {line}:")),
            "{line} not reported:\n{err}"
        );
    }
    assert!(err.contains("records_failed=4"), "{err}");
}

#[test]
fn a_failure_in_a_chain_names_the_source_record() {
    let (testkit, enrich) = (plugin("testkit"), plugin("enrich"));
    let input = format!("{GOOD}\n\"FAIL\"\n\"x\"\n");
    let out = run(
        &[
            "run",
            "--plugin",
            testkit.to_str().unwrap(),
            "--plugin",
            enrich.to_str().unwrap(),
            "--on-error",
            "skip",
        ],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&stdout(&out)).len(), 1);
    let err = stderr(&out);
    assert!(
        err.contains("skipped record stdin:2: plugin testkit.wasm: testkit refused FAIL"),
        "{err}"
    );
    assert!(
        err.contains("skipped record stdin:3: plugin enrich.wasm: record is not a JSON object"),
        "{err}"
    );
}

#[test]
fn a_record_routed_to_an_output_the_pipeline_lacks_is_a_failure() {
    let testkit = plugin("testkit");
    let out = fails_with(
        &["run", "--plugin", testkit.to_str().unwrap()],
        b"1\n\"ROUTE\"\n2\n",
        &["stdin:2", "output `elsewhere`"],
    );
    assert_eq!(stdout(&out), "1\n");
}
