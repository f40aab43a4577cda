//! Operations: Prometheus metrics and health, through the real binary.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{free_addr, signal};
use common::{plugin, runtime};

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
    let health: serde_json::Value =
        serde_json::from_str(&get(&addr, "/health").expect("200 while both run")).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
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
    let memory = sample(&text, "sluice_plugin_memory_peak_bytes{pipeline=\"enrich\"").unwrap();
    assert!(memory >= 65536.0, "{text}");
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

#[test]
fn poison_records_go_to_a_kafka_dead_letter_topic_with_provenance() {
    use common::kafka::{self, create_topic, header, produce, read_topic_with, unique};
    let broker = kafka::broker();
    let (input, output, dlq) = (unique("dlq-in"), unique("dlq-out"), unique("dlq"));
    for t in [&input, &output, &dlq] {
        create_topic(&broker, t, 4);
    }
    // 1% poison: values enrich cannot read.
    let sessions = std::fs::read_to_string(common::data("sessions.jsonl")).unwrap();
    let sessions: Vec<&str> = sessions.lines().collect();
    let records: Vec<(Option<String>, String)> = (0..10_000)
        .map(|i| {
            let value = if i % 100 == 7 {
                format!("POISON-{i}")
            } else {
                sessions[i % sessions.len()].to_owned()
            };
            (Some(format!("k{i}")), value)
        })
        .collect();
    produce(&broker, &input, &records);
    let out = runtime()
        .args([
            "run",
            "--source",
            &kafka::source_uri(&broker, &input, &unique("dlq")),
        ])
        .args([
            "--plugin",
            plugin("enrich").to_str().unwrap(),
            "--sink",
            &kafka::sink_uri(&broker, &output),
        ])
        .args([
            "--on-error",
            "dlq",
            "--dlq",
            &kafka::sink_uri(&broker, &dlq),
            "--count",
            "10000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let sha = {
        let report = runtime()
            .args(["inspect", plugin("enrich").to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&report.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("sha256:"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let good = read_topic_with(
        &broker,
        &output,
        9900,
        Duration::from_secs(1),
        Duration::from_secs(60),
        |_| (),
    );
    assert_eq!(good.len(), 9900);
    let letters = read_topic_with(
        &broker,
        &dlq,
        100,
        Duration::from_secs(1),
        Duration::from_secs(60),
        |m| {
            use rdkafka::message::Message;
            let h = |n: &str| header(m, n).unwrap_or_else(|| panic!("no header {n}"));
            (
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                [
                    h("sluice-pipeline"),
                    h("sluice-plugin"),
                    h("sluice-plugin-version"),
                    h("sluice-error"),
                    h("sluice-position"),
                    h("sluice-failed-at-ms"),
                ],
            )
        },
    );
    assert_eq!(letters.len(), 100, "exactly the poison records");
    for (key, value, [pipeline, plugin_name, version, error, position, at]) in &letters {
        let i: usize = value
            .strip_prefix("POISON-")
            .expect("unchanged value")
            .parse()
            .unwrap();
        assert_eq!(key.as_deref(), Some(format!("k{i}").as_str()), "key kept");
        assert_eq!(
            (pipeline.as_str(), plugin_name.as_str(), version.as_str()),
            ("main", "enrich.wasm", sha.as_str())
        );
        assert!(error.contains("enrich.wasm"), "{error}");
        assert!(
            position.starts_with(&format!("{input}/")) && position.contains('@'),
            "{position}"
        );
        assert!(at.parse::<i64>().unwrap() > 1_700_000_000_000);
    }
}

#[test]
fn dead_letters_on_an_object_sink_are_json_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = format!("file://{}/dlq?format=jsonl", dir.path().display());
    let input =
        b"{\"latitude\":39.0,\"longitude\":22.0,\"timestamp\":0}\nnot json\n{\"user_id\":\"u\"}\n";
    let out = common::run(
        &[
            "run",
            "--plugin",
            plugin("enrich").to_str().unwrap(),
            "--on-error",
            "dlq",
            "--dlq",
            &dlq,
        ],
        input,
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out).lines().count(), 1);
    let file = std::fs::read_dir(dir.path().join("dlq"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("a dead-letter object");
    let letters = common::json_lines(&std::fs::read_to_string(file).unwrap());
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["sluice-position"], "stdin:2");
    assert_eq!(
        letters[0]["value"], "",
        "a line that never decoded has no value"
    );
    assert!(letters[0]["sluice-error"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
    assert_eq!(letters[1]["sluice-position"], "stdin:3");
    assert_eq!(
        letters[1]["value"],
        serde_json::json!({"user_id": "u"}),
        "the input as it came"
    );
    assert_eq!(letters[1]["sluice-plugin"], "enrich.wasm");

    let e = common::error_line(&common::run(&["run", "--on-error", "dlq"], b""));
    assert!(
        e.contains("--on-error dlq needs a dead-letter endpoint: add --dlq URI"),
        "{e}"
    );
    let e = common::error_line(&common::run(&["run", "--dlq", &dlq], b""));
    assert!(e.contains("add --on-error dlq"), "{e}");
}

#[test]
fn plugins_are_sandboxed_and_get_only_the_capabilities_granted() {
    let testkit = plugin("testkit");
    let testkit = testkit.to_str().unwrap();
    // Files, sockets and the environment are never there: each attempt fails the record.
    let out = common::run(
        &[
            "run",
            "--plugin",
            testkit,
            "--on-error",
            "skip",
            "--allow",
            "clock,random",
        ],
        b"\"OPEN\"\n\"SOCKET\"\n\"ENV\"\n",
    );
    assert!(out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains("stdin:1: plugin testkit.wasm: cannot open /etc/hostname"),
        "{err}"
    );
    assert!(
        err.contains("stdin:2: plugin testkit.wasm: cannot connect to 127.0.0.1:9"),
        "{err}"
    );
    assert!(
        err.contains("stdin:3: plugin testkit.wasm: cannot read HOME"),
        "{err}"
    );
    assert_eq!(common::stdout(&out), "");

    // A transform gets neither clock nor random unless granted.
    let ask = |extra: &[&str]| {
        let mut args = vec!["run", "--plugin", testkit];
        args.extend_from_slice(extra);
        let out = common::run(&args, b"\"CLOCK\"\n\"RANDOM\"\n");
        assert!(out.status.success(), "{}", common::stderr(&out));
        common::stdout(&out)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let denied = ask(&[]);
    assert_eq!(denied[0], "0", "the clock reads the epoch");
    assert_eq!(ask(&[])[1], denied[1], "random is deterministic");
    let granted = ask(&["--allow", "clock,random"]);
    assert!(
        granted[0].parse::<u64>().unwrap() > 1_700_000_000,
        "{granted:?}"
    );
    assert_ne!(granted[1], denied[1]);
    let e = common::error_line(&common::run(
        &["run", "--plugin", testkit, "--allow", "network"],
        b"",
    ));
    assert!(
        e.contains("unknown capability `network`") && e.contains("never offered"),
        "{e}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_the_pipeline() {
    let out = common::run(
        &["--log-format", "json", "run", "--on-error", "skip"],
        b"{\"a\":1}\nbad\n",
    );
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = common::stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let skipped = lines
        .iter()
        .find(|l| l["level"] == "WARN")
        .expect("the skipped record is logged");
    assert_eq!(skipped["span"]["pipeline"], "main");
    assert!(skipped["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("stdin:2"));
    let done = lines
        .iter()
        .find(|l| l["fields"]["message"] == "done")
        .unwrap();
    assert_eq!(
        (
            done["fields"]["records_in"].as_u64(),
            done["fields"]["records_failed"].as_u64()
        ),
        (Some(2), Some(1))
    );
}

#[test]
fn a_sink_that_never_acknowledges_is_given_up_after_the_grace_period() {
    use common::kafka::{create_topic, sink_uri, unique, PrivateBroker};
    let broker = PrivateBroker::start();
    let topic = unique("grace");
    create_topic(&broker.addr, &topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = runtime()
        .args([
            "run",
            "--plugin",
            plugin("mock").to_str().unwrap(),
            "--rate",
            "500",
        ])
        .args([
            "--sink",
            &sink_uri(&broker.addr, &topic),
            "--grace-secs",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    broker.signal("-STOP"); // deliveries now wait forever
    std::thread::sleep(Duration::from_millis(500));
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let took = stopped.elapsed();
    eprintln!("stopped after {took:?}");
    broker.signal("-CONT");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{log}");
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("did not finish within the grace period of 2 s"),
        "{log}"
    );
}

#[test]
fn fuel_stops_a_runaway_plugin_long_before_its_deadline() {
    let started = Instant::now();
    let out = common::run(
        &[
            "run",
            "--plugin",
            plugin("testkit").to_str().unwrap(),
            "--fuel",
            "50000000",
        ]
        .into_iter()
        .chain(["--batch-deadline-ms", "600000", "--on-error", "skip"])
        .collect::<Vec<_>>(),
        b"\"a\"\n\"LOOP\"\n\"b\"\n",
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(
        common::stdout(&out),
        "\"a\"\n\"b\"\n",
        "its neighbours go on"
    );
    let err = common::stderr(&out);
    assert!(
        err.contains("stdin:2: plugin testkit.wasm ran out of its fuel of 50000000 per batch"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the 10-minute deadline did not have to act"
    );
    let e = common::error_line(&common::run(&["run", "--fuel", "0"], b""));
    assert!(e.contains("--fuel"), "{e}");
}

#[test]
fn limits_and_settings_can_be_set_per_plugin_in_a_pipelines_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let (enrich, testkit) = (plugin("enrich"), plugin("testkit"));
    // Fuel only on testkit; enrich (first) runs unmetered.
    std::fs::write(
        &file,
        format!(
            "[[pipeline]]\nname = \"p\"\nsource = \"stdin\"\nsink = \"stdout\"\non_error = \"skip\"\nbatch_deadline_ms = 600000\n\
             plugins = [{{ path = \"{}\", fuel = 50000000 }}]\n",
            testkit.display()
        ),
    )
    .unwrap();
    let out = common::run(
        &["run", "--config", file.to_str().unwrap()],
        b"\"a\"\n\"LOOP\"\n",
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "\"a\"\n");
    assert!(
        common::stderr(&out).contains("ran out of its fuel of 50000000"),
        "{}",
        common::stderr(&out)
    );
    // Settings of one plugin reach only its `init`.
    std::fs::write(
        &file,
        format!(
            "[[pipeline]]\nname = \"p\"\nsource = \"stdin\"\nsink = \"stdout\"\n\
             plugins = [\"{}\", {{ path = \"{}\", settings = {{ fail_init = \"no thanks\" }} }}]\n",
            enrich.display(),
            testkit.display()
        ),
    )
    .unwrap();
    let e = common::error_line(&common::run(
        &["run", "--config", file.to_str().unwrap()],
        b"",
    ));
    assert!(
        e.contains("testkit.wasm refused its config in `init`: no thanks"),
        "{e}"
    );
}

#[test]
fn kafka_consumer_lag_is_exported_and_reaches_zero_when_caught_up() {
    use common::kafka::{self, create_topic, produce, unique};
    let broker = kafka::broker();
    let input = unique("lag-in");
    create_topic(&broker, &input, 2);
    let records: Vec<(Option<String>, String)> = (0..3000)
        .map(|i| (Some(format!("k{i}")), format!("{{\"i\":{i}}}")))
        .collect();
    produce(&broker, &input, &records);
    let addr = free_addr();
    // Statistics every 200 ms instead of 5 s, through the URI's librdkafka pass-through.
    let source = format!(
        "{}&prop.statistics.interval.ms=200",
        kafka::source_uri(&broker, &input, &unique("lag"))
    );
    let mut child = runtime()
        .args(["run", "--source", &source, "--metrics", &addr])
        .args(["--plugin", plugin("identity").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let lags = loop {
        let text = get(&addr, "/metrics").unwrap_or_default();
        let lags: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("sluice_kafka_consumer_lag{"))
            .filter(|l| l.contains(&input))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        let read = sample(&text, "sluice_records_in_total{pipeline=\"main\"}").unwrap_or(0.0);
        if read == 3000.0 && !lags.is_empty() && lags.iter().all(|l| *l == 0.0) {
            break lags;
        }
        assert!(
            Instant::now() < deadline,
            "lag never reached 0 after reading {read} of 3000: {lags:?}\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!lags.is_empty());
    sigterm(&child);
    assert!(child.wait().unwrap().success());
}

fn sigterm(child: &std::process::Child) {
    signal(child, "-TERM");
}

#[test]
fn a_record_the_kafka_sink_cannot_take_is_routed_by_the_policy() {
    use common::kafka::{self, create_topic, header, produce, read_topic_with, unique};
    let broker = kafka::broker();
    let (input, dlq) = (unique("big-in"), unique("big-dlq"));
    let (out_fail, output) = (unique("big-out1"), unique("big-out2"));
    for t in [&input, &out_fail, &output, &dlq] {
        create_topic(&broker, t, 2);
    }
    // Record 7 is larger than the sink allows (message.max.bytes, set through the URI).
    let records: Vec<(Option<String>, String)> = (0..50)
        .map(|i| {
            let pad = if i == 7 { 20_000 } else { 10 };
            (
                Some(format!("k{i}")),
                format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(pad)),
            )
        })
        .collect();
    produce(&broker, &input, &records);
    let sink = |topic: &str| {
        format!(
            "{}?prop.message.max.bytes=10000",
            kafka::sink_uri(&broker, topic)
        )
    };
    let run = |group: &str, output: &str, policy: &[&str]| {
        runtime()
            .args([
                "run",
                "--source",
                &kafka::source_uri(&broker, &input, group),
            ])
            .args([
                "--plugin",
                plugin("identity").to_str().unwrap(),
                "--sink",
                &sink(output),
            ])
            .args(["--count", "50"])
            .args(policy)
            .output()
            .unwrap()
    };

    // fail (the default): the run stops, naming the record and why.
    let out = run(&unique("big-fail"), &out_fail, &[]);
    assert!(!out.status.success());
    let error = common::error_line(&out);
    assert!(
        error.contains(&format!("{input}/"))
            && error.contains("the sink cannot write it")
            && error.contains("too large"),
        "{error}"
    );

    // dlq: that record is a dead letter with its provenance, the 49 others are delivered.
    let out = run(
        &unique("big-dlq"),
        &output,
        &[
            "--on-error",
            "dlq",
            "--dlq",
            &kafka::sink_uri(&broker, &dlq),
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let good = read_topic_with(
        &broker,
        &output,
        49,
        Duration::from_secs(1),
        Duration::from_secs(60),
        |_| (),
    );
    assert_eq!(good.len(), 49);
    let letters = read_topic_with(
        &broker,
        &dlq,
        1,
        Duration::from_secs(1),
        Duration::from_secs(60),
        |m| {
            use rdkafka::message::Message;
            (
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                header(m, "sluice-error").unwrap_or_default(),
            )
        },
    );
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].0.as_deref(), Some("k7"));
    assert!(letters[0].1.contains("too large"), "{}", letters[0].1);
}
