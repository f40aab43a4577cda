//! `GET /overview`: every pipeline with what the console shows of it, in one answer: its state
//! (as `/health` gives it), records in/out/failed and per second over the last minutes, batch
//! latency over the last minute, its endpoints' progress (Kafka lag per partition, table
//! commits, objects written), its plugin slots (as `GET /pipelines`) and its last failures.

use serde_json::{json, Value};

use super::{Admin, Routes};
use crate::health::endpoint_name;

/// Shadow differences an overview carries per slot.
const SHADOW_SAMPLE: usize = 3;

/// Each endpoint's progress that `owns`, with its URI.
fn with_uri<T: serde::Serialize>(
    progress: &std::collections::BTreeMap<String, T>,
    owns: impl Fn(&str) -> bool,
) -> Value {
    progress
        .iter()
        .filter(|(uri, _)| owns(uri))
        .map(|(uri, p)| {
            let mut p = json!(p);
            p["uri"] = json!(uri);
            p
        })
        .collect()
}

pub fn overview(routes: &Routes, admin: &Admin) -> Value {
    let (healthy, health) = routes.health.report();
    let (_, readiness) = routes.health.readiness();
    let endpoints = routes.metrics.endpoints();
    let (lags, tables, objects) = (
        endpoints.kafka_lag(),
        endpoints.table_commits(),
        endpoints.objects_written(),
    );
    let mut pipelines = Vec::new();
    for entry in health["pipelines"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap_or_default();
        let mut p = entry.clone();
        let ready = readiness["pipelines"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name);
        p["ready"] = ready.map_or(json!(false), |r| r["ready"].clone());
        let own = routes.health.endpoints_of(name);
        let owns = |uri: &str| own.contains(&endpoint_name(uri));
        if let Some(m) = routes.metrics.pipeline_if_any(name) {
            use std::sync::atomic::Ordering::Relaxed;
            p["records"] = json!({
                "in": m.records_in.load(Relaxed),
                "out": m.records_out.load(Relaxed),
                "failed": m.records_failed.load(Relaxed),
            });
            p["failures"] = json!(m.recent_failures());
        }
        p["recent"] = json!(routes.metrics.recent(name));
        p["kafka_lag"] = lags
            .iter()
            .filter(|((uri, _), _)| owns(uri))
            .map(|((uri, partition), lag)| {
                json!({ "uri": endpoint_name(uri), "partition": partition, "lag": lag })
            })
            .collect();
        p["tables"] = with_uri(&tables, owns);
        p["objects"] = with_uri(&objects, owns);
        p["plugins"] = admin
            .slots
            .iter()
            .filter(|s| s.pipeline == name)
            .map(|s| {
                let mut view = json!(s.view());
                // Sent every second: the first differences only (the page shows three);
                // `GET …/shadow` has the whole sample.
                // (`pointer_mut`: indexing would turn a missing shadow into `{}`.)
                if let Some(Value::Array(sample)) = view.pointer_mut("/shadow/sample") {
                    sample.truncate(SHADOW_SAMPLE);
                }
                view
            })
            .collect();
        pipelines.push(p);
    }
    json!({
        "now_ms": crate::state::now_ms(),
        "healthy": healthy,
        "pipelines": pipelines,
    })
}
