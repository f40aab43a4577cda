//! Per-plugin limits: a memory cap per instance, a deadline per batch, and the capabilities
//! (clock, random) it is granted.

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// How often the engine's epoch advances; deadlines are rounded up to this.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time one call (one batch) may take before it is interrupted.
    pub batch_deadline: Duration,
    /// Fuel (roughly, wasm instructions) one call may burn; `None`: unmetered (the deadline
    /// still applies).
    pub fuel: Option<u64>,
    /// What the plugin may read beyond its input; `None`: by world (sources get the clock and
    /// random numbers to generate data, transforms nothing).
    pub capabilities: Option<Capabilities>,
}

/// WASI capabilities a plugin can be granted. Files, network and environment are never offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// The real wall and monotonic clocks; without it both read zero (the Unix epoch).
    pub clock: bool,
    /// Real random numbers; without it random bytes are all zero (deterministic).
    pub random: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        clock: true,
        random: true,
    };

    /// Parses `clock`, `random` (any order), or `none`.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut c = Capabilities::default();
        for name in names {
            match name.trim() {
                "clock" => c.clock = true,
                "random" => c.random = true,
                "none" | "" => {}
                other => {
                    return Err(format!(
                        "unknown capability `{other}`: grant `clock`, `random` or `none` (files, network and environment are never offered)"
                    ))
                }
            }
        }
        Ok(c)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 128 << 20,
            batch_deadline: Duration::from_secs(2),
            fuel: None,
            capabilities: None,
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

/// The store limiter: wasmtime's caps, and the largest linear memory any instance of the plugin
/// version grew to (for metrics).
pub struct MemoryWatch {
    pub limits: StoreLimits,
    pub peak: Arc<AtomicU64>,
}

impl ResourceLimiter for MemoryWatch {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak.fetch_max(desired as u64, Ordering::Relaxed);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
