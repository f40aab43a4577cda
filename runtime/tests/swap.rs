//! Hot swap through the real binary: the admin API, --watch and SIGHUP, under steady streams
//! (in-process and through a real Kafka-protocol broker), with broken versions and rollback.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::kafka::{self, create_topic, read_topic_with, unique};
use common::process::{admin, free_addr, log_of, wait_for_admin};
use common::{plugin, runtime};
use serde_json::Value;

/// A pipelines file: the mock generator at `rate` for `count` records into mem://s, then
/// `transform` to stdout.
fn stream_config(dir: &Path, transform: &Path, rate: u64, count: u64) -> PathBuf {
    let file = dir.join("stream.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[pipeline]]
name = "gen"
plugins = ["{mock}"]
sink = "mem://s"
rate = {rate}
count = {count}

[[pipeline]]
name = "enrich"
source = "mem://s"
plugins = ["{transform}"]
sink = "stdout"
"#,
            mock = plugin("mock").display(),
            transform = transform.display()
        ),
    )
    .unwrap();
    file
}

/// What came out, checked line by line as it streams: each line is one version's shape.
#[derive(Debug, Default)]
struct Outputs {
    v1: u64,
    v2: u64,
    sessions: HashSet<String>,
    duplicates: u64,
}

fn read_outputs(child: &mut Child) -> JoinHandle<Outputs> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut out = Outputs::default();
        for line in BufReader::with_capacity(1 << 20, stdout).lines() {
            let line = line.unwrap();
            let tagged = line.matches(r#""enrich_version":2"#).count();
            assert!(
                line.contains(r#""country":"#) && line.contains(r#""status":"#),
                "not enriched: {line}"
            );
            assert!(tagged <= 1, "two versions' shapes in one record: {line}");
            if tagged == 1 {
                out.v2 += 1;
            } else {
                out.v1 += 1;
            }
            let at = line.find(r#""session_id":""#).expect("session_id") + 14;
            if !out.sessions.insert(line[at..at + 36].to_owned()) {
                out.duplicates += 1;
            }
        }
        out
    })
}

fn spawn(args: &[&str], log: &Path) -> Child {
    runtime()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// `runtime run --config` over [`stream_config`], its admin API up and its output being read.
struct Stream {
    dir: tempfile::TempDir,
    child: Child,
    addr: String,
    log: PathBuf,
    reader: JoinHandle<Outputs>,
}

impl Stream {
    /// `transform`: the plugin to run; `None`: a copy of enrich at [`Stream::live`].
    fn start(transform: Option<&Path>, rate: u64, count: u64, extra: &[&str]) -> Stream {
        let dir = tempfile::tempdir().unwrap();
        let transform = transform.map_or_else(
            || {
                let live = dir.path().join("enrich.wasm");
                std::fs::copy(plugin("enrich"), &live).unwrap();
                live
            },
            Path::to_owned,
        );
        let config = stream_config(dir.path(), &transform, rate, count);
        let (addr, log) = (free_addr(), dir.path().join("log"));
        let mut args = vec![
            "run",
            "--config",
            config.to_str().unwrap(),
            "--admin",
            &addr,
        ];
        args.extend_from_slice(extra);
        let mut child = spawn(&args, &log);
        let reader = read_outputs(&mut child);
        wait_for_admin(&addr);
        Stream {
            dir,
            child,
            addr,
            log,
            reader,
        }
    }

    fn live(&self) -> PathBuf {
        self.dir.path().join("enrich.wasm")
    }

    /// The admin API's view of the one transform slot.
    fn view(&self) -> Value {
        admin(&self.addr, "GET", "/pipelines", None).1[0].clone()
    }

    /// Waits (10 s at most) until the view satisfies `ok`.
    fn wait_for(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.view();
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {v}\n{}",
                log_of(&self.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn hangup(&self) {
        Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits for a clean exit and returns what came out.
    fn finish(mut self) -> (Outputs, String) {
        assert!(
            self.child.wait().unwrap().success(),
            "{}",
            log_of(&self.log)
        );
        (self.reader.join().unwrap(), log_of(&self.log))
    }
}

/// Alternates enrich -> enrich_next -> enrich ... `swaps` times, `every` apart.
fn swap_back_and_forth(addr: &str, pipeline: &str, slot: &str, swaps: usize, every: Duration) {
    let path = format!("/pipelines/{pipeline}/plugins/{slot}");
    for i in 0..swaps {
        let file = if i % 2 == 0 {
            plugin("enrich_next")
        } else {
            plugin("enrich")
        };
        let (status, body) = admin(addr, "PUT", &path, Some(&file));
        assert_eq!(status, 200, "swap {i}: {body}");
        std::thread::sleep(every);
    }
}

#[test]
fn twenty_swaps_under_a_steady_in_process_stream_lose_and_duplicate_nothing() {
    let total = 1_000_000u64;
    let stream = Stream::start(Some(&plugin("enrich")), 250_000, total, &[]);
    swap_back_and_forth(
        &stream.addr,
        "enrich",
        "enrich",
        20,
        Duration::from_millis(120),
    );
    assert_eq!(stream.view()["swaps"], 20);
    let (out, _) = stream.finish();
    eprintln!(
        "in-process: {} by enrich, {} by enrich_next",
        out.v1, out.v2
    );
    assert_eq!(out.v1 + out.v2, total, "outputs != inputs");
    assert_eq!(out.duplicates, 0);
    assert_eq!(out.sessions.len() as u64, total);
    assert!(out.v1 > 0 && out.v2 > 0, "the swaps happened mid-stream");
}

#[test]
fn twenty_swaps_under_a_kafka_stream_lose_and_duplicate_nothing() {
    let broker = kafka::broker();
    let (input, output) = (unique("swap-in"), unique("swap-out"));
    create_topic(&broker, &input, 4);
    create_topic(&broker, &output, 4);
    let total = 1_000_000u64;
    let fill = runtime()
        .args([
            "run",
            "--plugin",
            plugin("mock").to_str().unwrap(),
            "--rate",
            "0",
        ])
        .args([
            "--count",
            &total.to_string(),
            "--sink",
            &kafka::sink_uri(&broker, &input),
        ])
        .output()
        .unwrap();
    assert!(
        fill.status.success(),
        "{}",
        String::from_utf8_lossy(&fill.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = (free_addr(), dir.path().join("log"));
    let mut child = spawn(
        &[
            "run",
            "--source",
            &kafka::source_uri(&broker, &input, &unique("swap")),
            "--plugin",
            plugin("enrich").to_str().unwrap(),
            "--sink",
            &kafka::sink_uri(&broker, &output),
            "--count",
            &total.to_string(),
            "--admin",
            &addr,
            "--batch-size",
            "128",
        ],
        &log,
    );
    wait_for_admin(&addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_of(&log).contains("partitions assigned") {
        assert!(Instant::now() < deadline, "{}", log_of(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    swap_back_and_forth(&addr, "main", "0", 20, Duration::from_millis(100));
    assert!(child.wait().unwrap().success(), "{}", log_of(&log));
    let read = read_topic_with(
        &broker,
        &output,
        total as usize,
        Duration::from_secs(2),
        Duration::from_secs(180),
        |m| {
            use rdkafka::message::Message;
            let v = m.payload().unwrap_or_default();
            let line = std::str::from_utf8(v).unwrap();
            let at = line.find(r#""session_id":""#).unwrap() + 14;
            (
                line[at..at + 36].to_owned(),
                line.contains(r#""enrich_version":2"#),
            )
        },
    );
    let v2 = read.iter().filter(|(_, tagged)| *tagged).count();
    eprintln!("kafka: {} by enrich, {v2} by enrich_next", read.len() - v2);
    let sessions: HashSet<&str> = read.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(read.len() as u64, total, "outputs != inputs");
    assert_eq!(sessions.len() as u64, total, "duplicates");
    assert!(v2 > 0 && v2 < read.len(), "the swaps happened mid-stream");
}

#[test]
fn broken_versions_never_replace_the_running_one_and_a_trapping_one_rolls_back() {
    let total = 30_000u64;
    // The settings reach every version: testkit traps on every record with them, producer's
    // `init` refuses them; enrich ignores both.
    let settings = ["--set", "trap_all=true", "--set", "key_field="];
    let stream = Stream::start(Some(&plugin("enrich")), 3000, total, &settings);
    let path = "/pipelines/enrich/plugins/enrich";
    let garbage = stream.dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").unwrap();
    for (file, expected) in [
        (garbage.clone(), "not a WebAssembly file"),
        (plugin("mock"), "implements the `source` world"),
        (
            plugin("producer"),
            "refused its config in `init`: key_field is empty",
        ),
        (
            plugin("not-a-plugin"),
            "is a component but not a Sluice plugin",
        ),
    ] {
        let (status, body) = admin(&stream.addr, "PUT", path, Some(&file));
        assert_eq!(status, 422, "{}: {body}", file.display());
        assert!(
            body["error"].as_str().unwrap().contains(expected),
            "{}: {body}",
            file.display()
        );
    }
    let view = stream.view();
    assert_eq!(
        (view["swaps"].as_u64(), view["failed_loads"].as_u64()),
        (Some(0), Some(4)),
        "{view}"
    );
    assert_eq!(view["name"], "enrich.wasm");

    // Loads fine, then traps on every record: it goes away by itself.
    let (status, body) = admin(&stream.addr, "PUT", path, Some(&plugin("testkit")));
    assert_eq!(status, 200, "{body}");
    let view = stream.wait_for("a rollback", |v| v["rollbacks"] == 1);
    assert_eq!(view["name"], "enrich.wasm", "{view}");
    let (status, _) = admin(&stream.addr, "POST", &format!("{path}/rollback"), None);
    assert_eq!(status, 409, "nothing older to roll back to");
    let (out, log) = stream.finish();
    assert!(log.contains("rolled back"), "{log}");
    assert_eq!(
        (out.v1, out.v2, out.duplicates),
        (total, 0, 0),
        "every record made by enrich, once"
    );
}

#[test]
fn watch_never_loads_a_half_written_file_and_sighup_reloads() {
    let stream = Stream::start(None, 1000, 12_000, &["--watch"]);
    let (live, next) = (stream.live(), std::fs::read(plugin("enrich_next")).unwrap());

    // Half of the new version, written in place, then left alone: never loaded.
    std::fs::write(&live, &next[..next.len() / 2]).unwrap();
    stream.wait_for("the truncated file is tried and refused", |v| {
        v["failed_loads"] == 1
    });
    assert_eq!(stream.view()["swaps"], 0);
    // The rest arrives: the whole file is loaded.
    let started = Instant::now();
    std::fs::write(&live, &next).unwrap();
    stream.wait_for("the complete file goes live", |v| v["swaps"] == 1);
    eprintln!("watch: file change to live in {:?}", started.elapsed());
    // An atomic rename back to the old version.
    let tmp = stream.dir.path().join("enrich.wasm.tmp");
    std::fs::copy(plugin("enrich"), &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    stream.wait_for("the renamed file goes live", |v| v["swaps"] == 2);

    // A SIGHUP on top of the watcher: the new file is loaded once.
    std::fs::write(&live, &next).unwrap();
    stream.hangup();
    stream.wait_for("SIGHUP (or the watcher) loads it", |v| v["swaps"] == 3);
    let (out, _) = stream.finish();
    assert_eq!((out.v1 + out.v2, out.duplicates), (12_000, 0));
    assert!(out.v2 > 0);
}

#[test]
fn sighup_reloads_plugin_files_and_settings_without_watch() {
    let stream = Stream::start(None, 1000, 6000, &[]);
    std::fs::copy(plugin("enrich_next"), stream.live()).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        stream.view()["swaps"],
        0,
        "no --watch: nothing changes by itself"
    );
    stream.hangup();
    let view = stream.wait_for("SIGHUP reloads", |v| v["swaps"] == 1);
    assert_eq!(view["origin"], "sighup");
    let (out, _) = stream.finish();
    assert_eq!(out.v1 + out.v2, 6000);
    assert!(out.v2 > 0);
}

#[test]
fn the_admin_api_listens_on_loopback_only_and_inspect_reads_it() {
    let out = runtime()
        .args([
            "run",
            "--plugin",
            plugin("enrich").to_str().unwrap(),
            "--admin",
            "0.0.0.0:9901",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let e = common::error_line(&out);
    assert!(
        e.contains("listens on loopback only") && e.contains("--admin-token"),
        "{e}"
    );
    let e = common::error_line(
        &runtime()
            .args(["inspect", "--admin", &free_addr()])
            .output()
            .unwrap(),
    );
    assert!(e.contains("no runtime answers there"), "{e}");

    let stream = Stream::start(Some(&plugin("enrich")), 1000, 3000, &[]);
    let addr = stream.addr.clone();
    let report = runtime()
        .args(["inspect", "--admin", &addr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    let sha = admin(&addr, "GET", "/pipelines", None).1[0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.starts_with("enrich\t0\tenrich.wasm\t")
            && text.contains(&sha)
            && text.contains("live"),
        "{text}"
    );
    let (status, body) = admin(
        &addr,
        "PUT",
        "/pipelines/enrich/plugins/nope",
        Some(&plugin("enrich")),
    );
    assert_eq!(status, 404, "{body}");
    stream.finish();
}

#[test]
fn an_admin_token_is_asked_of_every_admin_request() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, log) = (free_addr(), dir.path().join("log"));
    let mut child = runtime()
        .args([
            "run",
            "--plugin",
            plugin("enrich").to_str().unwrap(),
            "--admin",
            &addr,
            "--on-error",
            "skip",
            "--batch-size",
            "1",
        ])
        .env("SLUICE_ADMIN_TOKEN", "s3cret")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_admin(&addr);
    let curl = |auth: Option<&str>, method: &str, path: &str| -> String {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method]);
        if let Some(token) = auth {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = cmd.arg(format!("http://{addr}{path}")).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(None, "GET", "/pipelines"), "401");
    assert_eq!(curl(Some("wrong!"), "GET", "/pipelines"), "401");
    assert_eq!(
        curl(None, "POST", "/pipelines/main/plugins/0/rollback"),
        "401"
    );
    assert_eq!(curl(Some("s3cret"), "GET", "/pipelines"), "200");
    // A rollback with nothing to roll back to: past the token, refused for its own reason.
    assert_eq!(
        curl(Some("s3cret"), "POST", "/pipelines/main/plugins/0/rollback"),
        "409"
    );
    // Probes stay open.
    assert_eq!(curl(None, "GET", "/health"), "200");
    let e = common::error_line(
        &runtime()
            .args(["inspect", "--admin", &addr])
            .env_remove("SLUICE_ADMIN_TOKEN")
            .output()
            .unwrap(),
    );
    assert!(e.contains("asks for its admin token"), "{e}");
    let listed = runtime()
        .args(["inspect", "--admin", &addr, "--admin-token", "s3cret"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).starts_with("main\t0\tenrich.wasm"),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // The last failures, with their input's first bytes, behind the same token.
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, r#"{{"user":"no coordinates"}}"#).unwrap();
    stdin.flush().unwrap();
    assert_eq!(curl(None, "GET", "/pipelines/main/failures"), "401");
    let deadline = Instant::now() + Duration::from_secs(30);
    let failures = loop {
        let out = Command::new("curl")
            .args(["-s", "-H", "Authorization: Bearer s3cret"])
            .arg(format!("http://{addr}/pipelines/main/failures"))
            .output()
            .unwrap();
        let failures: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if failures.as_array().is_some_and(|f| !f.is_empty()) {
            break failures;
        }
        assert!(Instant::now() < deadline, "{failures}\n{}", log_of(&log));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        failures[0]["value"], r#"{"user":"no coordinates"}"#,
        "{failures}"
    );
    assert_eq!(failures[0]["plugin"], "enrich.wasm", "{failures}");
    assert!(
        failures[0]["reason"].as_str().unwrap().contains("latitude"),
        "{failures}"
    );
    assert!(
        failures[0]["position"]
            .as_str()
            .unwrap()
            .starts_with("stdin"),
        "{failures}"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success(), "{}", log_of(&log));
}
