//! Per-plugin limits: a memory cap per instance and a deadline per batch.

use std::time::Duration;

use wasmtime::{StoreLimits, StoreLimitsBuilder};

/// How often the engine's epoch advances; deadlines are rounded up to this.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time one call (one batch) may take before it is interrupted.
    pub batch_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 128 << 20,
            batch_deadline: Duration::from_secs(2),
        }
    }
}

impl Limits {
    /// The store limiter: growing past the cap traps (with a message saying so) instead of
    /// handing the guest a failed allocation it may not check.
    pub fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.memory_bytes)
            .trap_on_grow_failure(true)
            .build()
    }

    /// The batch deadline in epoch ticks.
    pub fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        (self.batch_deadline.as_nanos().div_ceil(tick) as u64).max(1)
    }
}
