//! compose.yaml and the Dockerfile cannot be run here (no Docker engine), so their structure is
//! checked instead: pinned images, Kafka in KRaft mode, the buckets and topics created at start,
//! and a runtime service whose endpoint overrides name endpoints examples/stack.toml has.

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml::Value;

fn repo(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn pinned(image: &str) -> bool {
    matches!(image.rsplit_once(':'), Some((_, tag)) if !tag.is_empty() && tag != "latest")
}

#[test]
fn compose_runs_the_stack_against_kafka_and_minio() {
    let compose: Value = serde_yaml::from_str(&repo("compose.yaml")).expect("compose.yaml is YAML");
    let services = compose["services"].as_mapping().expect("services");
    let service = |name: &str| &services[&Value::from(name)];
    for (name, s) in services {
        if let Some(image) = s["image"].as_str() {
            assert!(
                pinned(image),
                "{name:?}: image {image} is not pinned to a tag"
            );
        }
    }
    // Kafka in KRaft mode: broker and controller roles, no ZooKeeper anywhere.
    let kafka = service("kafka");
    assert!(kafka["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka:"));
    let roles = kafka["environment"]["KAFKA_PROCESS_ROLES"]
        .as_str()
        .unwrap();
    assert!(
        roles.contains("broker") && roles.contains("controller"),
        "{roles}"
    );
    assert!(!serde_yaml::to_string(&compose)
        .unwrap()
        .to_lowercase()
        .contains("zookeeper"));
    // MinIO, with the stack's buckets created by a one-shot service.
    assert!(service("minio")["image"]
        .as_str()
        .unwrap()
        .starts_with("minio/minio:"));
    let buckets = serde_yaml::to_string(&service("minio-buckets")["command"]).unwrap();
    for bucket in ["analytics-raw-data", "analytics-processed"] {
        assert!(
            buckets.contains(&format!("local/{bucket}")),
            "bucket {bucket} is not created"
        );
    }
    let topics = serde_yaml::to_string(&service("kafka-topics")["command"]).unwrap();
    for topic in ["user_sessions", "processed_sessions"] {
        assert!(topics.contains(topic), "topic {topic} is not created");
    }

    // The runtime: built from the repo's Dockerfile, running examples/stack.toml with only its
    // endpoints overridden.
    let runtime = service("runtime");
    assert_eq!(runtime["build"].as_str(), Some("."));
    let command: Vec<&str> = runtime["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(command, ["run", "--config", "/app/examples/stack.toml"]);
    let stack: toml::Table = toml::from_str(&repo("examples/stack.toml")).unwrap();
    let endpoints: BTreeSet<String> = stack["endpoints"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let overridden: BTreeSet<String> = runtime["environment"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| {
            k.as_str()?
                .strip_prefix("SLUICE_ENDPOINT_")
                .map(str::to_ascii_lowercase)
        })
        .collect();
    assert_eq!(
        overridden, endpoints,
        "every endpoint points at a service, and only those"
    );
    for (k, v) in runtime["environment"].as_mapping().unwrap() {
        let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap_or_default());
        if k.starts_with("SLUICE_ENDPOINT_") {
            assert!(
                v.starts_with("kafka://kafka:19092/")
                    || v.starts_with("s3://") && v.contains("endpoint=http://minio:9000")
                    || v.starts_with("iceberg://iceberg-rest:8181/")
                        && v.contains("s3_endpoint=http://minio:9000"),
                "{k}={v} does not point at the compose services"
            );
        }
    }
    let deps = runtime["depends_on"].as_mapping().unwrap();
    assert!(deps.contains_key("kafka-topics") && deps.contains_key("minio-buckets"));

    // Scaled out: MinIO notifies object-events (kept on disk while Kafka is down), the stack's
    // producer reads the events, and the `ingest` replicas run examples/ingest.toml in its group.
    let minio = &service("minio")["environment"];
    assert_eq!(
        minio["MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY"].as_str(),
        Some("object-events")
    );
    assert!(minio["MINIO_NOTIFY_KAFKA_QUEUE_DIR_PRIMARY"]
        .as_str()
        .is_some());
    assert!(
        buckets.contains("arn:minio:sqs::PRIMARY:kafka --event put"),
        "{buckets}"
    );
    assert!(
        topics.contains("object-events"),
        "topic object-events is not created"
    );
    let events_source = runtime["environment"]["SLUICE_ENDPOINT_RAW_OBJECTS"]
        .as_str()
        .unwrap();
    assert!(
        events_source.contains("events=kafka://kafka:19092/object-events"),
        "{events_source}"
    );
    let ingest = service("ingest");
    assert_eq!(
        ingest["environment"]["SLUICE_ENDPOINT_RAW_OBJECTS"].as_str(),
        Some(events_source)
    );
    assert!(ingest["deploy"]["replicas"].as_u64().unwrap() > 1);
    let ingest_file: toml::Table = toml::from_str(&repo("examples/ingest.toml")).unwrap();
    for (k, _) in ingest["environment"].as_mapping().unwrap() {
        if let Some(endpoint) = k.as_str().unwrap().strip_prefix("SLUICE_ENDPOINT_") {
            assert!(
                ingest_file["endpoints"]
                    .get(endpoint.to_ascii_lowercase())
                    .is_some(),
                "ingest overrides {endpoint}, which examples/ingest.toml does not have"
            );
        }
    }
    let lister = serde_yaml::to_string(&service("object-lister")["command"]).unwrap();
    assert!(lister.contains("list=events") && lister.contains("kafka://kafka:19092/object-events"));

    // The image has what the stack file names: the runtime and the three plugins.
    let dockerfile = repo("Dockerfile");
    for from in dockerfile.lines().filter_map(|l| l.strip_prefix("FROM ")) {
        let image = from.split_whitespace().next().unwrap();
        assert!(pinned(image), "Dockerfile: {image} is not pinned");
    }
    assert!(
        dockerfile.contains(" /app/target/wasm32-wasip2/release/\n"),
        "Dockerfile does not put the plugins in /app/target/wasm32-wasip2/release/"
    );
    for plugin in ["mock", "producer", "enrich"] {
        let built = format!("target/wasm32-wasip2/release/{plugin}.wasm");
        assert!(
            dockerfile.contains(&format!("-p {plugin}")),
            "Dockerfile does not build {plugin}"
        );
        // The image copies the plugin where the stack file (in /app/examples) looks for it.
        assert!(
            dockerfile.contains(&format!("/src/{built}")),
            "Dockerfile does not copy {built}"
        );
        assert!(
            repo("examples/stack.toml").contains(&format!("../{built}")),
            "examples/stack.toml does not load {built}"
        );
    }
}
