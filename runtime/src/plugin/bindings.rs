//! Host bindings for the two worlds of `wit/plugin.wit`, and the host side of its imports.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(super) mod transform {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:plugin/transform",
    });
}

pub(super) mod source {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:plugin/source",
        with: { "sluice:plugin/host": super::transform::sluice::plugin::host },
    });
}

pub(super) mod stateful {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:plugin/stateful",
        with: { "sluice:plugin/host": super::transform::sluice::plugin::host },
    });
}

pub(super) use stateful::sluice::plugin::{state, timers};
pub(super) use transform::sluice::plugin::host;

/// What a plugin's `Store` holds: its WASI context (no files, network or environment), its
/// memory limit, a buffer of what it wrote to stderr (a panic message, for error reports) and,
/// for a stateful plugin during a call, the state of the lane being processed.
pub struct HostState {
    pub plugin: std::sync::Arc<str>,
    pub limits: super::limits::MemoryWatch,
    pub stderr: MemoryOutputPipe,
    pub lane: Option<crate::state::LaneCall>,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// How much of a plugin's stderr is kept; older output is dropped.
const STDERR_CAPACITY: usize = 64 * 1024;

impl HostState {
    pub fn new(
        plugin: std::sync::Arc<str>,
        limits: super::limits::MemoryWatch,
        grants: super::Capabilities,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // Deny by default: no preopened directories, no environment, no arguments, no network
        // (opening a file or a socket fails); the clock and random numbers only if granted.
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        if !grants.clock {
            wasi.wall_clock(Frozen).monotonic_clock(Frozen);
        }
        if !grants.random {
            wasi.secure_random(Zeros)
                .insecure_random(Zeros)
                .insecure_random_seed(0);
        }
        let wasi = wasi.build();
        HostState {
            plugin,
            limits,
            stderr,
            lane: None,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// What the plugin last said on stderr: its panic message if it panicked (Rust prints
    /// "thread '..' panicked at FILE:LINE:COL:" and the message on the next line), else the
    /// last line.
    pub fn last_stderr_line(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match lines.iter().rposition(|l| l.contains("panicked at")) {
            Some(i) => {
                let at = lines[i]
                    .split_once("panicked at ")
                    .map_or(lines[i], |(_, at)| at.trim_end_matches(':'));
                match lines.get(i + 1).filter(|l| !l.starts_with("note:")) {
                    Some(message) => Some(format!("panicked at {at}: {message}")),
                    None => Some(format!("panicked at {at}")),
                }
            }
            None => lines.last().map(|l| (*l).to_owned()),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            host::Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            host::Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            host::Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            host::Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            host::Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }
}

/// The `state` and `timers` imports work on the lane the host put in the store for the call;
/// outside a call of a stateful plugin there is none (a transform cannot import them), and
/// they see an empty lane that keeps nothing.
impl state::Host for HostState {
    fn get_many(&mut self, keys: Vec<Vec<u8>>) -> Vec<Option<Vec<u8>>> {
        match &self.lane {
            Some(lane) => keys.iter().map(|k| lane.get(k)).collect(),
            None => vec![None; keys.len()],
        }
    }

    fn put_many(&mut self, entries: Vec<state::Entry>) -> Result<(), String> {
        let Some(lane) = &mut self.lane else {
            return Err("no state outside a call".to_owned());
        };
        let entries = entries
            .into_iter()
            .map(|e| (e.key, e.value, e.ttl_ms))
            .collect();
        lane.put_many(entries).map_err(|e| e.to_string())
    }

    fn delete_many(&mut self, keys: Vec<Vec<u8>>) {
        if let Some(lane) = &mut self.lane {
            for k in &keys {
                lane.delete(k);
            }
        }
    }

    fn scan(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        max: u32,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        match &self.lane {
            Some(lane) => lane.scan(&prefix, start_after.as_deref(), max as usize),
            None => Vec::new(),
        }
    }
}

fn domain(d: timers::Domain) -> crate::state::Domain {
    match d {
        timers::Domain::EventTime => crate::state::Domain::Event,
        timers::Domain::ProcessingTime => crate::state::Domain::Processing,
    }
}

impl timers::Host for HostState {
    fn register(&mut self, key: Vec<u8>, at_ms: i64, d: timers::Domain) {
        if let Some(lane) = &mut self.lane {
            lane.register(key, at_ms, domain(d));
        }
    }

    fn delete(&mut self, key: Vec<u8>, at_ms: i64, d: timers::Domain) {
        if let Some(lane) = &mut self.lane {
            lane.unregister(key, at_ms, domain(d));
        }
    }

    fn observe_event_time(&mut self, at_ms: i64) {
        if let Some(lane) = &mut self.lane {
            lane.observe(at_ms);
        }
    }

    fn stream_time(&mut self) -> Option<i64> {
        self.lane.as_ref().and_then(|l| l.stream_time())
    }
}

/// The clock of a plugin without the `clock` capability: always the Unix epoch.
struct Frozen;

impl wasmtime_wasi::HostWallClock for Frozen {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The random source of a plugin without the `random` capability: zeros, so it is
/// deterministic (std's hash maps still work).
struct Zeros;

impl rand_core::TryRng for Zeros {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(0)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        dst.fill(0);
        Ok(())
    }
}
