//! Prometheus metrics, rendered in the text exposition format for `GET /metrics`: records
//! in/out/failed and batch latency per pipeline, records and failures per plugin version, swaps
//! and rollbacks per plugin slot, object store retries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod history;
mod prometheus;

pub use history::Recent;

use crate::context::EndpointMetrics;
use crate::plugin::PluginSlot;
use crate::sync::Locked;

/// Upper bounds of the batch latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// One pipeline's counters, updated by its workers.
#[derive(Default)]
pub struct PipelineMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub records_failed: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Stateful pipelines: state held (bytes, keys) and timers pending, over every worker.
    state_bytes: AtomicI64,
    state_keys: AtomicI64,
    timers_pending: AtomicI64,
    /// Checkpoints stored, their time (from barrier to stored) and bytes.
    checkpoints: AtomicU64,
    checkpoint_us: AtomicU64,
    checkpoint_last_us: AtomicU64,
    checkpoint_bytes: AtomicU64,
    /// The last records that failed, newest last.
    recent_failures: std::sync::Mutex<std::collections::VecDeque<RecentFailure>>,
}

/// Failed records kept per pipeline for the admin API, and bytes of each value shown.
const RECENT_FAILURES: usize = 20;
const VALUE_SHOWN: usize = 256;

/// A record that failed, as `GET /pipelines/P/failures` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentFailure {
    pub position: String,
    pub plugin: Option<String>,
    pub reason: String,
    /// The failed value's first bytes (lossy UTF-8), when it is known.
    pub value: Option<String>,
    pub at_ms: i64,
}

impl PipelineMetrics {
    /// Keeps `failure` among the pipeline's recent failures.
    pub fn note_failure(&self, failure: &crate::failure::Failure) {
        let input = failure.value.as_deref();
        let mut recent = self.recent_failures.locked();
        if recent.len() == RECENT_FAILURES {
            recent.pop_front();
        }
        recent.push_back(RecentFailure {
            position: failure.position.clone(),
            plugin: failure.plugin.as_ref().map(|(name, _)| name.to_string()),
            reason: failure.message.clone(),
            value: input
                .map(|v| String::from_utf8_lossy(&v[..v.len().min(VALUE_SHOWN)]).into_owned()),
            at_ms: crate::state::now_ms(),
        });
    }

    pub fn recent_failures(&self) -> Vec<RecentFailure> {
        self.recent_failures.locked().iter().cloned().collect()
    }

    /// A worker's state changed from `before` to `now` (bytes, keys, timers pending).
    pub fn add_state(&self, before: (usize, usize, usize), now: (usize, usize, usize)) {
        let delta = |a: usize, b: usize| b as i64 - a as i64;
        self.state_bytes.fetch_add(delta(before.0, now.0), Relaxed);
        self.state_keys.fetch_add(delta(before.1, now.1), Relaxed);
        self.timers_pending
            .fetch_add(delta(before.2, now.2), Relaxed);
    }

    /// A checkpoint was stored, `took` after its barrier, with `bytes` of state.
    pub fn observe_checkpoint(&self, took: Duration, bytes: usize) {
        self.checkpoints.fetch_add(1, Relaxed);
        self.checkpoint_us
            .fetch_add(took.as_micros() as u64, Relaxed);
        self.checkpoint_last_us
            .store(took.as_micros() as u64, Relaxed);
        self.checkpoint_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// One batch went through the plugin chain in `took`.
    pub fn observe_batch(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Relaxed);
    }
}

/// Everything `/metrics` shows.
pub struct Metrics {
    pipelines: Mutex<BTreeMap<String, Arc<PipelineMetrics>>>,
    slots: Mutex<Vec<Arc<PluginSlot>>>,
    endpoints: Arc<EndpointMetrics>,
    history: Mutex<BTreeMap<String, history::History>>,
}

impl Metrics {
    /// Metrics of one run, with the figures its endpoints report.
    pub fn new(endpoints: Arc<EndpointMetrics>) -> Self {
        Metrics {
            pipelines: Mutex::default(),
            slots: Mutex::default(),
            endpoints,
            history: Mutex::default(),
        }
    }

    /// The figures endpoints report.
    pub fn endpoints(&self) -> &EndpointMetrics {
        &self.endpoints
    }

    /// Takes this second's sample of every pipeline (the admin listener calls it once a second).
    pub fn sample_history(&self) {
        let pipelines = self.pipelines.locked().clone();
        let now = crate::state::now_ms();
        let mut history = self.history.locked();
        for (name, p) in pipelines {
            history.entry(name).or_default().sample(&p, now);
        }
    }

    /// A pipeline's last minutes.
    pub fn recent(&self, pipeline: &str) -> Recent {
        self.history
            .locked()
            .get(pipeline)
            .map(history::History::recent)
            .unwrap_or_default()
    }

    pub fn pipeline(&self, name: &str) -> Arc<PipelineMetrics> {
        let mut p = self.pipelines.locked();
        p.entry(name.to_owned()).or_default().clone()
    }

    /// A pipeline's figures, if it runs here.
    pub fn pipeline_if_any(&self, name: &str) -> Option<Arc<PipelineMetrics>> {
        self.pipelines.locked().get(name).cloned()
    }

    pub fn add_slots(&self, slots: &[Arc<PluginSlot>]) {
        let mut s = self.slots.locked();
        s.extend(slots.iter().cloned());
    }
}
