//! Helpers for running the real `runtime` binary on the real plugins.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod iceberg;
pub mod kafka;
pub mod process;
pub mod s3;

/// The workspace target dir, as cargo uses it (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// A plugin built by `cargo build --release --target wasm32-wasip2` (scripts/build-plugins.sh).
pub fn plugin(name: &str) -> PathBuf {
    built(&format!("wasm32-wasip2/release/{name}.wasm"))
}

/// The same plugin built by `cargo component build --release`.
pub fn component_plugin(name: &str) -> PathBuf {
    built(&format!("wasm32-wasip1/release/{name}.wasm"))
}

/// A Python or JavaScript plugin built by scripts/build-plugins.sh (`enrich-py`, `enrich-js`).
pub fn guest_plugin(name: &str) -> PathBuf {
    built(&format!("guest/{name}.wasm"))
}

fn built(rel: &str) -> PathBuf {
    let path = target_dir().join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh first (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The runtime command, with a private artifact cache per test binary.
pub fn runtime() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runtime"));
    cmd.env("SLUICE_CACHE_DIR", target_dir().join("sluice-test-cache"));
    cmd.env("SLUICE_LOG", "info");
    cmd
}

/// Runs `runtime ARGS` with `input` on stdin.
pub fn run(args: &[&str], input: &[u8]) -> Output {
    run_with(runtime().args(args), input)
}

/// Runs `cmd` (a [`runtime`] with arguments, maybe more environment) with `input` on stdin.
pub fn run_with(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runtime starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("runtime runs");
    writer.join().expect("stdin writer");
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `error: ...` line on stderr.
pub fn error_line(out: &Output) -> String {
    let err = stderr(out);
    err.lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{err}"))
        .to_owned()
}

pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}
