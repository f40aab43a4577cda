//! The Prometheus text exposition format of [`Metrics`], for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::{Metrics, PipelineMetrics, LATENCY_BUCKETS};
use crate::sync::Locked;

impl Metrics {
    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let pipelines = self.pipelines.locked().clone();
        type PipelineCounter = fn(&PipelineMetrics) -> u64;
        let counters: [(&str, &str, PipelineCounter); 3] = [
            (
                "sluice_records_in_total",
                "Records read from the source.",
                |p: &PipelineMetrics| p.records_in.load(Relaxed),
            ),
            (
                "sluice_records_out_total",
                "Records the sink accepted.",
                |p: &PipelineMetrics| p.records_out.load(Relaxed),
            ),
            (
                "sluice_records_failed_total",
                "Records that failed (skipped, or the one that stopped the run).",
                |p: &PipelineMetrics| p.records_failed.load(Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (pipeline, p) in &pipelines {
                let _ = writeln!(
                    out,
                    "{name}{{pipeline=\"{}\"}} {}",
                    escape(pipeline),
                    get(p)
                );
            }
        }
        let name = "sluice_batch_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time a batch spends in the plugin chain.\n# TYPE {name} histogram"
        );
        for (pipeline, p) in &pipelines {
            let pipeline = escape(pipeline);
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&p.latency_buckets) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{pipeline=\"{pipeline}\",le=\"{bound}\"}} {}",
                    bucket.load(Relaxed)
                );
            }
            let count = p.latency_count.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{pipeline=\"{pipeline}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{pipeline=\"{pipeline}\"}} {}",
                p.latency_sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{pipeline=\"{pipeline}\"}} {count}");
        }
        type StateValue = fn(&PipelineMetrics) -> f64;
        let state: [(&str, &str, &str, StateValue); 7] = [
            (
                "sluice_state_bytes",
                "gauge",
                "Bytes of plugin state held (stateful pipelines).",
                |p| p.state_bytes.load(Relaxed) as f64,
            ),
            (
                "sluice_state_keys",
                "gauge",
                "Keys of plugin state held.",
                |p| p.state_keys.load(Relaxed) as f64,
            ),
            (
                "sluice_timers_pending",
                "gauge",
                "Plugin timers registered and not fired yet.",
                |p| p.timers_pending.load(Relaxed) as f64,
            ),
            (
                "sluice_checkpoints_total",
                "counter",
                "Checkpoints stored.",
                |p| p.checkpoints.load(Relaxed) as f64,
            ),
            (
                "sluice_checkpoint_seconds_total",
                "counter",
                "Time from checkpoint barriers to their state stored.",
                |p| p.checkpoint_us.load(Relaxed) as f64 / 1e6,
            ),
            (
                "sluice_checkpoint_last_seconds",
                "gauge",
                "Time the last checkpoint took.",
                |p| p.checkpoint_last_us.load(Relaxed) as f64 / 1e6,
            ),
            (
                "sluice_checkpoint_bytes_total",
                "counter",
                "Bytes of state checkpoints stored.",
                |p| p.checkpoint_bytes.load(Relaxed) as f64,
            ),
        ];
        for (name, kind, help, get) in state {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (pipeline, p) in &pipelines {
                let _ = writeln!(
                    out,
                    "{name}{{pipeline=\"{}\"}} {}",
                    escape(pipeline),
                    get(p)
                );
            }
        }
        let slots = self.slots.locked().clone();
        let _ = writeln!(out, "# HELP sluice_plugin_records_total Records a plugin version processed.\n# TYPE sluice_plugin_records_total counter");
        let _ = writeln!(out, "# HELP sluice_plugin_failures_total Records a plugin version failed (errors and traps).\n# TYPE sluice_plugin_failures_total counter");
        let _ = writeln!(out, "# HELP sluice_plugin_live 1 for the live version of a plugin slot.\n# TYPE sluice_plugin_live gauge");
        let _ = writeln!(out, "# HELP sluice_plugin_memory_peak_bytes Largest linear memory an instance of a plugin version grew to.\n# TYPE sluice_plugin_memory_peak_bytes gauge");
        for slot in &slots {
            for (version, live) in slot.versions() {
                let labels = format!(
                    "pipeline=\"{}\",slot=\"{}\",plugin=\"{}\",version=\"{}\"",
                    escape(&slot.pipeline),
                    slot.index,
                    escape(&version.plugin.name),
                    &version.plugin.compiled.sha256[..12]
                );
                let _ = writeln!(
                    out,
                    "sluice_plugin_records_total{{{labels}}} {}",
                    version.records.load(Relaxed)
                );
                let _ = writeln!(
                    out,
                    "sluice_plugin_failures_total{{{labels}}} {}",
                    version.failures.load(Relaxed)
                );
                let _ = writeln!(out, "sluice_plugin_live{{{labels}}} {}", u8::from(live));
                let _ = writeln!(
                    out,
                    "sluice_plugin_memory_peak_bytes{{{labels}}} {}",
                    version.plugin.memory_peak.load(Relaxed)
                );
            }
        }
        type SlotCounter = fn(&crate::plugin::SlotCounters) -> u64;
        let counters: [(&str, &str, SlotCounter); 3] = [
            (
                "sluice_plugin_swaps_total",
                "New versions swapped in.",
                |c: &crate::plugin::SlotCounters| c.swaps,
            ),
            (
                "sluice_plugin_rollbacks_total",
                "Versions rolled back.",
                |c: &crate::plugin::SlotCounters| c.rollbacks,
            ),
            (
                "sluice_plugin_failed_loads_total",
                "New versions that failed to load (the running one stayed).",
                |c: &crate::plugin::SlotCounters| c.failed_loads,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for slot in &slots {
                let _ = writeln!(
                    out,
                    "{name}{{pipeline=\"{}\",slot=\"{}\"}} {}",
                    escape(&slot.pipeline),
                    slot.index,
                    get(&slot.counters_snapshot())
                );
            }
        }
        let name = "sluice_shadow_records_total";
        let _ = writeln!(out, "# HELP {name} Records a shadow run compared with the live version, by result.\n# TYPE {name} counter");
        let skipped = "sluice_shadow_skipped_batches_total";
        let mut skips = String::new();
        for slot in &slots {
            let Some(shadow) = slot.shadow() else {
                continue;
            };
            let r = shadow.report();
            let labels = format!(
                "pipeline=\"{}\",slot=\"{}\",version=\"{}\"",
                escape(&slot.pipeline),
                slot.index,
                &r.sha256[..12.min(r.sha256.len())]
            );
            for (result, n) in [
                ("equal", r.equal),
                ("different", r.different),
                ("shadow_failed", r.shadow_failed),
                ("live_failed", r.live_failed),
                ("both_failed", r.both_failed),
            ] {
                let _ = writeln!(out, "{name}{{{labels},result=\"{result}\"}} {n}");
            }
            let _ = writeln!(skips, "{skipped}{{{labels}}} {}", r.skipped_batches);
        }
        let _ = write!(out, "# HELP {skipped} Batches a shadow run was too busy to take.\n# TYPE {skipped} counter\n{skips}");
        let name = "sluice_object_store_retries_total";
        let _ = writeln!(out, "# HELP {name} Object store requests retried after a temporary error.\n# TYPE {name} counter");
        for (uri, n) in self.endpoints.store_retries() {
            let _ = writeln!(out, "{name}{{uri=\"{}\"}} {n}", escape(&uri));
        }
        let name = "sluice_kafka_consumer_lag";
        let _ = writeln!(out, "# HELP {name} Records behind the partition's high watermark (committed offsets), where the broker reports it.\n# TYPE {name} gauge");
        for ((uri, partition), lag) in self.endpoints.kafka_lag() {
            let _ = writeln!(
                out,
                "{name}{{uri=\"{}\",partition=\"{partition}\"}} {lag}",
                escape(&uri)
            );
        }
        let name = "sluice_kafka_produce_retries_total";
        let _ = writeln!(out, "# HELP {name} Produce requests librdkafka retried after a temporary error.\n# TYPE {name} counter");
        for (uri, n) in self.endpoints.kafka_retries() {
            let _ = writeln!(out, "{name}{{uri=\"{}\"}} {n}", escape(&uri));
        }
        let name = "sluice_object_events_total";
        let _ = writeln!(out, "# HELP {name} Object events by outcome: read, repeated (already read in this run), ignored (not a created object of this source), missing (the object is gone), malformed.\n# TYPE {name} counter");
        for ((uri, outcome), n) in self.endpoints.object_events() {
            let _ = writeln!(
                out,
                "{name}{{uri=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(&uri)
            );
        }
        let commits = self.endpoints.table_commits();
        type Commits = crate::context::TableCommits;
        let table_series: [Series<Commits>; 6] = [
            (
                "sluice_table_commits_total",
                "counter",
                "Table commits that landed.",
                |t| t.commits as f64,
            ),
            (
                "sluice_table_commit_conflicts_total",
                "counter",
                "Table commits retried because another writer committed first.",
                |t| t.conflicts as f64,
            ),
            (
                "sluice_table_records_committed_total",
                "counter",
                "Records in table commits that landed.",
                |t| t.records as f64,
            ),
            (
                "sluice_table_commit_seconds_total",
                "counter",
                "Time spent committing (closing data files to landing), summed.",
                |t| t.seconds,
            ),
            (
                "sluice_table_files_committed_total",
                "counter",
                "Data files in table commits that landed.",
                |t| t.files as f64,
            ),
            (
                "sluice_table_last_commit_timestamp_seconds",
                "gauge",
                "When the last table commit landed (Unix time).",
                |t| t.last_at_ms as f64 / 1e3,
            ),
        ];
        for (name, kind, help, get) in table_series {
            per_uri(&mut out, name, kind, help, &commits, get);
        }
        let written = self.endpoints.objects_written();
        type Written = crate::context::ObjectsWritten;
        let object_series: [Series<Written>; 3] = [
            (
                "sluice_objects_written_total",
                "counter",
                "Objects an object sink wrote.",
                |o| o.objects as f64,
            ),
            (
                "sluice_object_records_written_total",
                "counter",
                "Records in the objects an object sink wrote.",
                |o| o.records as f64,
            ),
            (
                "sluice_object_bytes_written_total",
                "counter",
                "Bytes of the objects an object sink wrote.",
                |o| o.bytes as f64,
            ),
        ];
        for (name, kind, help, get) in object_series {
            per_uri(&mut out, name, kind, help, &written, get);
        }
        out
    }
}

/// A metric with a sample per endpoint URI: name, type, help, and its value from `T`.
type Series<T> = (&'static str, &'static str, &'static str, fn(&T) -> f64);

/// One metric with a sample per endpoint URI.
fn per_uri<T>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    by_uri: &BTreeMap<String, T>,
    value: fn(&T) -> f64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (uri, t) in by_uri {
        let _ = writeln!(out, "{name}{{uri=\"{}\"}} {}", escape(uri), value(t));
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new(Arc::default());
        let p = m.pipeline("enrich");
        p.records_in.fetch_add(5, Relaxed);
        p.observe_batch(Duration::from_micros(700));
        let text = m.render();
        assert!(
            text.contains("sluice_records_in_total{pipeline=\"enrich\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_batch_seconds_bucket{pipeline=\"enrich\",le=\"0.0005\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_batch_seconds_bucket{pipeline=\"enrich\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_batch_seconds_count{pipeline=\"enrich\"} 1\n"),
            "{text}"
        );
        assert_eq!(escape("a\"b"), "a\\\"b");
    }
}
