//! Per-plugin limits: a memory cap per instance, a deadline per batch, and the capabilities
//! (clock, random) it is granted.

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
