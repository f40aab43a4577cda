//! Keyed state and timers of stateful plugins: each source lane's state per plugin (`lane`),
//! what a plugin call sees of it (`LaneCall`), its bytes in a checkpoint (`snapshot`), and where
//! checkpoints are kept (`store`).

mod lane;
pub mod snapshot;
mod store;

pub use lane::{Domain, LaneState, OverLimit, Timer};
pub use store::StateStore;

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch: processing time.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The lane state a plugin call works on, with the lane's limit and the call's processing time.
#[derive(Debug, Default)]
pub struct LaneCall {
    pub state: LaneState,
    /// Bytes the lane may hold (`state_limit=`).
    pub limit: usize,
    pub now_ms: i64,
}

impl LaneCall {
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.state.get(key, self.now_ms).map(<[u8]>::to_vec)
    }

    /// Puts every entry (key, value, ttl in ms; 0 = none) or none.
    pub fn put_many(&mut self, entries: Vec<(Vec<u8>, Vec<u8>, u64)>) -> Result<(), OverLimit> {
        let now = self.now_ms;
        let entries = entries
            .into_iter()
            .map(|(k, v, ttl)| {
                let expires =
                    (ttl > 0).then(|| now.saturating_add(ttl.min(i64::MAX as u64) as i64));
                (k, v, expires)
            })
            .collect();
        self.state.put_many(entries, self.limit)
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.state.delete(key);
    }

    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        max: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.state.scan(prefix, start_after, max, self.now_ms)
    }

    pub fn register(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
        self.state.register(Timer { at_ms, domain, key });
    }

    pub fn unregister(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
        self.state.unregister(&Timer { at_ms, domain, key });
    }

    pub fn observe(&mut self, at_ms: i64) {
        self.state.observe(at_ms);
    }

    pub fn stream_time(&self) -> Option<i64> {
        self.state.stream_time()
    }
}
