//! The console in a real browser: headless Chromium driven by Playwright (`console/drive.cjs`)
//! against a runtime moving a Kafka stream (tansu) through enrich, with an admin token. The page
//! asks for the token, shows the pipeline with counters that move and the failed record, an
//! upload through the page swaps the plugin, its rollback button rolls back, a shadow run shows
//! its differences, and when the runtime is killed the page says it is not answering.

mod common;

use std::process::Command;

use common::kafka::{self, create_topic, produce, unique};
use common::process::{free_addr, log_of, spawn, spawn_with, terminate, wait_for_admin};
use common::{plugin, runtime};

const TOKEN: &str = "console-test-token";
const BAD_VALUE: &str = "this record is not JSON";

/// playwright-core's directory, installed by `scripts/browser-tools.sh`.
fn playwright() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/browser-tools.sh");
    let out = Command::new("bash")
        .args([script, "where"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_console_shows_a_running_stack_and_its_buttons_swap_roll_back_and_shadow() {
    let playwright = playwright();
    let broker = kafka::broker();
    let (input, output) = (unique("console-in"), unique("console-out"));
    create_topic(&broker, &input, 2);
    create_topic(&broker, &output, 2);
    produce(&broker, &input, &[(None, BAD_VALUE.to_owned())]);
    let dir = tempfile::tempdir().unwrap();
    // A slow feed, so that counters move for as long as the browser watches.
    let feed_log = dir.path().join("feed");
    let mut feed = kafka::feed(&broker, &input, 500, 10_000_000, 7, &feed_log);
    let (addr, log) = (free_addr(), dir.path().join("log"));
    let mut child = spawn_with(
        runtime().env("SLUICE_ADMIN_TOKEN", TOKEN),
        &[
            "run",
            "--source",
            &kafka::source_uri(&broker, &input, &unique("console")),
            "--plugin",
            plugin("enrich").to_str().unwrap(),
            "--sink",
            &kafka::sink_uri(&broker, &output),
            "--on-error",
            "skip",
            "--admin",
            &addr,
        ],
        &log,
    );
    wait_for_admin(&addr);
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/drive.cjs");
    let out = Command::new("node")
        .arg(driver)
        .env("PLAYWRIGHT", &playwright)
        .env("CONSOLE_URL", format!("http://{addr}/"))
        .env("ADMIN_TOKEN", TOKEN)
        .env("PIPELINE", "main")
        .env("BAD_VALUE", BAD_VALUE)
        .env("NEXT_WASM", plugin("enrich_next"))
        .env("RUNTIME_PID", child.id().to_string())
        .output()
        .expect("node runs");
    terminate(&mut feed, &feed_log);
    // The driver kills the runtime at its end; one that failed before leaves it running.
    let _ = child.kill();
    let _ = child.wait();
    let log = log_of(&log);
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\nruntime log:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The runtime saw what the page asked of it, through the admin API.
    for line in [
        "swapped in a new version",
        "rolled back: asked through the admin API",
        "shadow run stopped",
    ] {
        assert!(log.contains(line), "`{line}` is not in the log:\n{log}");
    }
    eprintln!(
        "console figures: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

/// The console's files are served without the token (they hold no data) and may load nothing
/// from elsewhere; what they show needs the token.
#[test]
fn the_console_loads_without_the_token_and_its_data_asks_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = (free_addr(), dir.path().join("log"));
    let mut child = spawn_with(
        runtime().env("SLUICE_ADMIN_TOKEN", TOKEN),
        &[
            "run",
            "--plugin",
            plugin("mock").to_str().unwrap(),
            "--plugin",
            plugin("enrich").to_str().unwrap(),
            "--rate",
            "50",
            "--admin",
            &addr,
        ],
        &log,
    );
    wait_for_admin(&addr);
    let head = |path: &str, token: Option<&str>| -> String {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-D", "-", "-o", "/dev/null"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd.arg(format!("http://{addr}{path}")).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    for path in ["/", "/console.js", "/console.css"] {
        let headers = head(path, None);
        assert!(headers.starts_with("http/1.1 200"), "{path}: {headers}");
        assert!(
            headers.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{path}: {headers}"
        );
    }
    assert!(head("/overview", None).starts_with("http/1.1 401"));
    let out = Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://{addr}/overview"))
        .output()
        .unwrap();
    let overview: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let main = &overview["pipelines"][0];
    assert_eq!(main["name"], "main", "{overview}");
    assert_eq!(main["plugins"][0]["name"], "enrich.wasm", "{overview}");
    assert!(main["records"]["out"].is_u64(), "{overview}");
    terminate(&mut child, &log);
    // The metrics-only listener serves no console.
    let metrics = free_addr();
    let mut child = spawn(
        &[
            "run",
            "--plugin",
            plugin("mock").to_str().unwrap(),
            "--rate",
            "50",
            "--metrics",
            &metrics,
        ],
        &log,
    );
    wait_for_admin(&metrics);
    let headers = {
        let out = Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/null"])
            .arg(format!("http://{metrics}/"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    assert!(headers.starts_with("http/1.1 404"), "{headers}");
    terminate(&mut child, &log);
}
