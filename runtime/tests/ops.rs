//! Operations: Prometheus metrics and health, through the real binary.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{plugin, runtime};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn get(addr: &str, path: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--fail", "--max-time", "5"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_count_records_per_pipeline_and_plugin_version() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stream.toml");
    std::fs::write(
        &config,
        format!(
            "[[pipeline]]\nname = \"gen\"\nplugins = [\"{}\"]\nsink = \"mem://s\"\nrate = 2000\ncount = 8000\n\n\
             [[pipeline]]\nname = \"enrich\"\nsource = \"mem://s\"\nplugins = [\"{}\"]\nsink = \"stdout\"\n",
            plugin("mock").display(),
            plugin("enrich").display()
        ),
    )
    .unwrap();
    let addr = free_addr();
    let mut child = runtime()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--metrics",
            &addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        if let Some(text) = get(&addr, "/metrics") {
            if sample(&text, "sluice_records_out_total{pipeline=\"enrich\"}").unwrap_or(0.0)
                >= 2000.0
            {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "no metrics on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        get(&addr, "/health").as_deref(),
        Some("{\"status\":\"ok\"}\n")
    );
    assert_eq!(
        get(&addr, "/pipelines"),
        None,
        "the admin API is not on --metrics"
    );
    let generated = sample(&text, "sluice_records_out_total{pipeline=\"gen\"}").unwrap();
    let enriched = sample(&text, "sluice_records_in_total{pipeline=\"enrich\"}").unwrap();
    assert!(generated >= enriched && enriched >= 2000.0, "{text}");
    let version = sample(&text, "sluice_plugin_records_total{pipeline=\"enrich\",slot=\"0\",plugin=\"enrich.wasm\",version=\"").unwrap();
    assert!(version >= 2000.0, "{text}");
    assert_eq!(
        sample(&text, "sluice_plugin_live{pipeline=\"enrich\""),
        Some(1.0),
        "{text}"
    );
    let batches = sample(&text, "sluice_batch_seconds_count{pipeline=\"enrich\"}").unwrap();
    let inf = sample(
        &text,
        "sluice_batch_seconds_bucket{pipeline=\"enrich\",le=\"+Inf\"}",
    )
    .unwrap();
    assert!(batches > 0.0 && batches == inf, "{text}");
    assert_eq!(
        sample(&text, "sluice_records_failed_total{pipeline=\"enrich\"}"),
        Some(0.0)
    );
    assert!(text.contains("# TYPE sluice_batch_seconds histogram"));
    assert!(child.wait().unwrap().success());
}
