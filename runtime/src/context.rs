//! What one run shares between its pipelines and endpoints: the endpoint metrics, the stop
//! signal and per-run endpoint state (such as the in-process topics). Handed down explicitly,
//! never static, so two runs in one process share nothing.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::health::Health;
use crate::sync::Locked;

/// One run's shared state. Cheap to clone: every clone is the same run.
#[derive(Clone)]
pub struct Context {
    /// Figures the endpoints report, rendered by `/metrics`.
    pub endpoints: Arc<EndpointMetrics>,
    /// Pipeline states and endpoint trouble, for `/health` and `/ready`.
    pub health: Arc<Health>,
    stop: Arc<watch::Sender<bool>>,
    shared: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            endpoints: Arc::default(),
            health: Arc::default(),
            stop: Arc::new(watch::channel(false).0),
            shared: Arc::default(),
        }
    }
}

impl Context {
    /// The run is stopping (a signal, or a pipeline failed): endpoints that hold records back
    /// (objects rolled by age) write them now, and pipelines finish what they read.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Turns true when the run stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// The run's one value of type `T` (made on first use): state an endpoint kind keeps per
    /// run, such as the registry of in-process topics.
    pub fn shared<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut shared = self.shared.locked();
        let any = shared
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        any.downcast::<T>()
            .unwrap_or_else(|_| unreachable!("entries are keyed by their own type"))
    }
}

/// What endpoints count for `/metrics`, by URI.
#[derive(Default)]
pub struct EndpointMetrics {
    store_retries: Mutex<BTreeMap<String, u64>>,
    kafka_lag: Mutex<BTreeMap<(String, i32), i64>>,
    kafka_retries: Mutex<BTreeMap<String, u64>>,
    table_commits: Mutex<BTreeMap<String, TableCommits>>,
    objects_written: Mutex<BTreeMap<String, ObjectsWritten>>,
    object_events: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// What a table sink's commits did, summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TableCommits {
    pub commits: u64,
    pub conflicts: u64,
    pub records: u64,
    /// Data files the commits added.
    pub files: u64,
    /// Time from the start of a commit (closing its files) to its landing.
    pub seconds: f64,
    /// When the last one landed (Unix milliseconds).
    pub last_at_ms: i64,
}

/// What an object sink wrote, summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ObjectsWritten {
    pub objects: u64,
    pub records: u64,
    pub bytes: u64,
    /// When the last one was written (Unix milliseconds).
    pub last_at_ms: i64,
}

impl EndpointMetrics {
    /// An object store request was retried after a temporary error.
    pub fn count_store_retry(&self, uri: &str) {
        *self
            .store_retries
            .locked()
            .entry(uri.to_owned())
            .or_default() += 1;
    }

    /// A partition's consumer lag from librdkafka's statistics (`None`: the broker's high
    /// watermark is unknown, so there is no lag to show).
    pub fn set_kafka_consumer_lag(&self, uri: &str, partition: i32, lag: Option<i64>) {
        let mut lags = self.kafka_lag.locked();
        match lag {
            Some(lag) => lags.insert((uri.to_owned(), partition), lag),
            None => lags.remove(&(uri.to_owned(), partition)),
        };
    }

    /// Produce requests librdkafka retried so far.
    pub fn set_kafka_produce_retries(&self, uri: &str, retries: u64) {
        self.kafka_retries.locked().insert(uri.to_owned(), retries);
    }

    /// A table commit of `landed.records` records in `landed.files` files landed after
    /// `landed.conflicts` retries, `landed.seconds` after it started.
    pub fn count_table_commit(&self, uri: &str, landed: TableCommits) {
        let mut all = self.table_commits.locked();
        let t = all.entry(uri.to_owned()).or_default();
        t.commits += 1;
        t.conflicts += landed.conflicts;
        t.records += landed.records;
        t.files += landed.files;
        t.seconds += landed.seconds;
        t.last_at_ms = crate::state::now_ms();
    }

    /// An object sink wrote an object of `records` records and `bytes` bytes.
    pub fn count_object_written(&self, uri: &str, records: u64, bytes: u64) {
        let mut all = self.objects_written.locked();
        let o = all.entry(uri.to_owned()).or_default();
        o.objects += 1;
        o.records += records;
        o.bytes += bytes;
        o.last_at_ms = crate::state::now_ms();
    }

    pub fn objects_written(&self) -> BTreeMap<String, ObjectsWritten> {
        self.objects_written.locked().clone()
    }

    /// An event-fed object source dealt with an event: `read`, `repeated`, `ignored`,
    /// `missing` or `malformed`.
    pub fn count_object_event(&self, uri: &str, outcome: &'static str) {
        *self
            .object_events
            .locked()
            .entry((uri.to_owned(), outcome))
            .or_default() += 1;
    }

    pub fn object_events(&self) -> BTreeMap<(String, &'static str), u64> {
        self.object_events.locked().clone()
    }

    pub fn table_commits(&self) -> BTreeMap<String, TableCommits> {
        self.table_commits.locked().clone()
    }

    pub fn store_retries(&self) -> BTreeMap<String, u64> {
        self.store_retries.locked().clone()
    }

    pub fn kafka_lag(&self) -> BTreeMap<(String, i32), i64> {
        self.kafka_lag.locked().clone()
    }

    pub fn kafka_retries(&self) -> BTreeMap<String, u64> {
        self.kafka_retries.locked().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counter(Mutex<u32>);

    #[test]
    fn shared_state_is_per_run() {
        let (a, b) = (Context::default(), Context::default());
        *a.shared::<Counter>().0.lock().unwrap() += 1;
        *a.clone().shared::<Counter>().0.lock().unwrap() += 1;
        assert_eq!(*a.shared::<Counter>().0.lock().unwrap(), 2);
        assert_eq!(*b.shared::<Counter>().0.lock().unwrap(), 0);
        let stopping = b.stopping();
        b.stop();
        assert!(*stopping.borrow());
        assert!(!*a.stopping().borrow());
    }
}
