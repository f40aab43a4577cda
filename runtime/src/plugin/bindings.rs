//! Host bindings for the two worlds of `wit/plugin.wit`, and the host side of its imports.

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub mod transform {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:plugin/transform",
    });
}

pub mod source {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:plugin/source",
        with: { "sluice:plugin/host": super::transform::sluice::plugin::host },
    });
}

pub use transform::sluice::plugin::host;

/// What a plugin's `Store` holds: its WASI context (no files, network or environment), its
/// memory limit and a buffer of what it wrote to stderr (a panic message, for error reports).
pub struct HostState {
    pub plugin: std::sync::Arc<str>,
    pub limits: StoreLimits,
    pub stderr: MemoryOutputPipe,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// How much of a plugin's stderr is kept; older output is dropped.
const STDERR_CAPACITY: usize = 64 * 1024;

impl HostState {
    pub fn new(plugin: std::sync::Arc<str>, limits: StoreLimits) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // Deny by default: no preopened directories, no environment, no arguments, no network.
        // Clocks and random come with WASI; the plugin is handed the time through `now-ms`.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .build();
        HostState {
            plugin,
            limits,
            stderr,
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
