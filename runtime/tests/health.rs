//! `/health` and `/ready` tell the truth: 503 naming the pipeline and the endpoint while a
//! broker is paused or the S3 server is down, 200 again once it is back.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::kafka::{create_topic, sink_uri, unique, PrivateBroker};
use common::process::*;
use common::{plugin, runtime, s3};
use serde_json::Value;

/// Polls `GET addr/path` until `want` holds for (status, body), or fails after `within`.
fn await_answer(
    addr: &str,
    path: &str,
    within: Duration,
    log: &Path,
    want: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = http_get(addr, path);
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if want(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} answered {status} {body} for {within:?}; log:\n{}",
            log_of(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The mock generator at 2000 records/s into `sink`, serving health on `addr`.
fn generator(sink: &str, addr: &str, log: &Path) -> Child {
    let mock = plugin("mock");
    spawn_with(
        s3::with_credentials(&mut runtime()),
        &[
            "run",
            "--plugin",
            mock.to_str().unwrap(),
            "--rate",
            "2000",
            "--sink",
            sink,
            "--metrics",
            addr,
        ],
        log,
    )
}

fn healthy(status: u16, body: &Value) -> bool {
    status == 200 && body["status"] == "ok" && body["pipelines"][0]["state"] == "running"
}

/// 503, with the pipeline retrying on `endpoint`.
fn retrying_on(endpoint: &str) -> impl Fn(u16, &Value) -> bool + '_ {
    move |status, body| {
        let p = &body["pipelines"][0];
        status == 503
            && body["status"] == "unhealthy"
            && p["name"] == "main"
            && p["state"] == "retrying"
            && p["endpoint"] == endpoint
            && p["reason"].as_str().is_some_and(|r| !r.is_empty())
    }
}

/// Runs the generator into `sink`, waits for health and readiness, then checks that `outage`
/// turns /health to 503 naming the pipeline and `endpoint` within `within`, and that `recover`
/// brings it back to 200.
fn health_through_an_outage(
    sink: &str,
    endpoint: &str,
    within: Duration,
    outage: impl FnOnce(),
    recover: impl FnOnce(),
) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let addr = free_addr();
    let mut child = generator(sink, &addr, &log);
    let minute = Duration::from_secs(60);
    await_answer(&addr, "/health", minute, &log, healthy);
    await_answer(&addr, "/ready", minute, &log, |s, b| {
        s == 200 && b["ready"] == true
    });
    outage();
    let body = await_answer(&addr, "/health", within, &log, retrying_on(endpoint));
    eprintln!("during the outage: {body}");
    recover();
    await_answer(&addr, "/health", minute, &log, healthy);
    signal(&child, "-TERM");
    assert!(
        wait_exit(&mut child, minute, &log).success(),
        "{}",
        log_of(&log)
    );
}

#[test]
fn a_paused_broker_makes_health_503_naming_the_endpoint_and_200_after() {
    let broker = PrivateBroker::start();
    let topic = unique("health");
    create_topic(&broker.addr, &topic, 2);
    let sink = sink_uri(&broker.addr, &topic);
    health_through_an_outage(
        &sink,
        &sink,
        Duration::from_secs(60),
        || broker.signal("-STOP"),
        || broker.signal("-CONT"),
    );
}

#[test]
fn a_stopped_s3_server_makes_health_503_naming_the_endpoint_and_200_after() {
    let server = std::cell::RefCell::new(s3::PrivateServer::start());
    let prefix = unique("health");
    let sink = s3::uri(&server.borrow().addr, &prefix, "format=jsonl&roll=500ms");
    let endpoint = sink.split('?').next().unwrap().to_owned();
    // The store's retries (about 30 s in all) outlast the time it takes to say so.
    health_through_an_outage(
        &sink,
        &endpoint,
        Duration::from_secs(20),
        || server.borrow_mut().kill(),
        || server.borrow_mut().restart(),
    );
}

#[test]
fn health_lists_every_pipeline_and_ready_waits_for_plugins() {
    let addr = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!(
            "[[pipeline]]\nname = \"gen\"\nplugins = [\"{}\"]\nsink = \"mem://s\"\nrate = 100\n\n\
             [[pipeline]]\nname = \"copy\"\nsource = \"mem://s\"\nsink = \"stdout\"\n",
            plugin("mock").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut child = spawn(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--metrics",
            &addr,
        ],
        &log,
    );
    let minute = Duration::from_secs(60);
    let body = await_answer(&addr, "/health", minute, &log, |s, _| s == 200);
    let names: Vec<&str> = body["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // In the pipelines file's order.
    assert_eq!(names, ["gen", "copy"]);
    await_answer(&addr, "/ready", minute, &log, |s, _| s == 200);
    signal(&child, "-TERM");
    assert!(
        wait_exit(&mut child, minute, &log).success(),
        "{}",
        log_of(&log)
    );
}

/// An event-fed object source reads through a Kafka consumer of its own: /ready waits for its
/// group, and /health names its broker when that goes away.
#[test]
fn an_event_fed_source_is_ready_once_its_group_is_joined_and_unhealthy_without_its_broker() {
    let broker = PrivateBroker::start();
    let events = unique("health-events");
    create_topic(&broker.addr, &events, 2);
    let source = s3::uri(
        &s3::server(),
        &format!("{}/in", unique("health-objects")),
        &format!(
            "format=parquet&events=kafka://{}/{events}&group={}&prop.session.timeout.ms=6000",
            broker.addr,
            unique("health-group")
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let addr = free_addr();
    let mut child = spawn_with(
        s3::with_credentials(&mut runtime()),
        &[
            "run",
            "--source",
            &source,
            "--sink",
            "stdout",
            "--metrics",
            &addr,
        ],
        &log,
    );
    let minute = Duration::from_secs(60);
    await_answer(&addr, "/ready", minute, &log, |s, b| {
        s == 200 && b["ready"] == true
    });
    assert!(
        log_of(&log).contains("partitions assigned"),
        "ready before the events consumer joined its group:\n{}",
        log_of(&log)
    );
    broker.signal("-KILL");
    let endpoint = format!("kafka://{}/{events}", broker.addr);
    let body = await_answer(&addr, "/health", minute, &log, retrying_on(&endpoint));
    eprintln!("without the events broker: {body}");
    signal(&child, "-KILL");
    let _ = child.wait();
}
