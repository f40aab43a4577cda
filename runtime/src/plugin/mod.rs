//! The WebAssembly side of the host: one engine, plugins compiled once and cached, instances
//! with limits. See `wit/plugin.wit` for the contract.

mod bindings;
mod cache;
pub mod inspect;
mod instance;
mod limits;
mod shadow;
mod swap;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

pub use bindings::HostState;
pub use cache::ArtifactCache;
pub use instance::{BatchError, Processed, SourceInstance, TransformInstance};
pub use limits::{Capabilities, Limits, EPOCH_TICK};
pub use shadow::{Outcome, Shadow, ShadowReport};
pub use swap::{PluginSlot, RollbackPolicy, SlotCounters, SlotView, Stage, Version};
pub use watch::watch_files;

/// The contract version plugins are checked against.
pub const CONTRACT: &str = "sluice:plugin@0.1.0";

/// The world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Transform,
    Source,
    /// A transform with keyed state and timers.
    Stateful,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Transform => "transform",
            World::Source => "source",
            World::Stateful => "stateful",
        })
    }
}

/// The wasmtime engine with its linker, artifact cache and epoch ticker.
pub struct PluginEngine {
    engine: Engine,
    /// Whether calls are metered in fuel (only when some plugin has a fuel limit: metering
    /// costs every call).
    fuel: bool,
    linker: Linker<HostState>,
    cache: ArtifactCache,
    ticker_stop: Arc<AtomicBool>,
}

/// How many plugin instances may be alive at once (pooling allocator slots).
const MAX_INSTANCES: u32 = 256;

impl PluginEngine {
    pub fn new(cache_dir: PathBuf) -> Result<Self> {
        Self::with_fuel(cache_dir, false)
    }

    /// An engine that meters fuel, for plugins with a fuel limit per call.
    pub fn with_fuel(cache_dir: PathBuf, fuel: bool) -> Result<Self> {
        Self::metered(cache_dir, fuel, true)
    }

    /// An engine with or without fuel metering and epoch deadlines. Without deadlines nothing
    /// stops a plugin that loops: only the benches that measure what deadlines cost use that.
    pub fn metered(cache_dir: PathBuf, fuel: bool, deadlines: bool) -> Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(deadlines);
        config.consume_fuel(fuel);
        config.cranelift_opt_level(OptLevel::Speed);
        // The pooling allocator instantiates in microseconds with no mmap spikes; the on-demand
        // allocator showed 1-4 ms instantiation spikes. A wasip2 Rust component has a few core
        // instances and tables but one memory.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 8)
            .total_memories(MAX_INSTANCES * 2)
            .total_tables(MAX_INSTANCES * 8)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(16);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| anyhow!("cannot start the WebAssembly engine: {e}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        bindings::state::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        bindings::timers::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticking, stop) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .context("starting the epoch thread")?;

        let cache = ArtifactCache::new(cache_dir, &engine);
        Ok(PluginEngine {
            engine,
            fuel,
            linker,
            cache,
            ticker_stop,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads, checks and compiles (or loads from cache) a component file.
    pub fn compile(&self, path: &Path) -> Result<Compiled> {
        let wasm = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(
                "plugin file {} not found: check the path, or build the plugins with \
                 `cargo build --release --target wasm32-wasip2`",
                path.display()
            ),
            _ => anyhow!("cannot read plugin file {}: {e}", path.display()),
        })?;
        check_header(path, &wasm)?;
        let sha256 = hex(&Sha256::digest(&wasm));
        let component = self.cache.load(&self.engine, &sha256, &wasm).map_err(|e| {
            anyhow!(
                "{} is not a valid WebAssembly component: {e:#}",
                path.display()
            )
        })?;
        Ok(Compiled {
            path: path.to_owned(),
            size: wasm.len() as u64,
            sha256,
            component,
        })
    }

    /// Compiles a plugin, checks it against the contract and prepares it for instantiation.
    pub fn load(
        self: &Arc<Self>,
        path: &Path,
        config: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<Arc<Plugin>> {
        let compiled = self.compile(path)?;
        let world = compiled.world(&self.engine)?;
        let display = compiled.path.display();
        let pre = self.linker.instantiate_pre(&compiled.component).map_err(|e| {
            anyhow!(
                "{display} needs an import Sluice does not provide ({e:#}); plugins may import only \
                 `sluice:plugin/host`, `sluice:plugin/state`, `sluice:plugin/timers` and WASI 0.2 \
                 interfaces"
            )
        })?;
        let wrong_shape = |e: wasmtime::Error| {
            anyhow!("{display} does not match the `{world}` world of {CONTRACT}: {e:#}; rebuild it against wit/plugin.wit")
        };
        let pre = match world {
            World::Transform => {
                Pre::Transform(bindings::transform::TransformPre::new(pre).map_err(wrong_shape)?)
            }
            World::Source => {
                Pre::Source(bindings::source::SourcePre::new(pre).map_err(wrong_shape)?)
            }
            World::Stateful => {
                Pre::Stateful(bindings::stateful::StatefulPre::new(pre).map_err(wrong_shape)?)
            }
        };
        let name = path
            .file_name()
            .map_or_else(|| display.to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Arc::new(Plugin {
            name: name.into(),
            world,
            compiled,
            pre,
            config,
            limits,
            memory_peak: Default::default(),
            engine: self.clone(),
        }))
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// `\0asm` and the version/layer field: 1 for core modules, 0x0d + layer 1 for components.
fn check_header(path: &Path, wasm: &[u8]) -> Result<()> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        bail!(
            "{} is not a WebAssembly file (it does not start with the `\\0asm` magic); pass a plugin \
             built with `cargo build --target wasm32-wasip2` or `cargo component build`",
            path.display()
        );
    }
    match wasm[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => bail!(
            "{} is a core WebAssembly module, not a component: build the plugin with \
             `cargo build --target wasm32-wasip2` or `cargo component build` (not wasm32-unknown-unknown)",
            path.display()
        ),
        _ => bail!("{} has an unsupported WebAssembly version or layer {:02x?}", path.display(), &wasm[4..8]),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A compiled component, not yet checked against the contract.
pub struct Compiled {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub component: Component,
}

impl Compiled {
    /// Names and types of the component's exports (`imports = false`) or imports.
    pub fn items(&self, engine: &Engine, imports: bool) -> Vec<(String, String)> {
        let ty = self.component.component_type();
        let describe = |(name, item): (&str, wasmtime::component::types::ComponentExtern<'_>)| {
            let kind = match item.ty {
                ComponentItem::ComponentFunc(f) => {
                    let params: Vec<String> = f
                        .params()
                        .map(|(n, t)| format!("{n}: {}", type_name(&t)))
                        .collect();
                    let results: Vec<String> = f.results().map(|t| type_name(&t)).collect();
                    match results.as_slice() {
                        [] => format!("func({})", params.join(", ")),
                        _ => format!("func({}) -> {}", params.join(", "), results.join(", ")),
                    }
                }
                ComponentItem::ComponentInstance(_) => "instance".to_string(),
                ComponentItem::Type(_) => "type".to_string(),
                ComponentItem::Resource(_) => "resource".to_string(),
                ComponentItem::CoreFunc(_) => "core func".to_string(),
                ComponentItem::Module(_) => "module".to_string(),
                ComponentItem::Component(_) => "component".to_string(),
            };
            (name.to_string(), kind)
        };
        if imports {
            ty.imports(engine).map(describe).collect()
        } else {
            ty.exports(engine).map(describe).collect()
        }
    }

    /// Which world of the contract the component exports.
    pub fn world(&self, engine: &Engine) -> Result<World> {
        let exports: Vec<String> = self
            .component
            .component_type()
            .exports(engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let has = |n: &str| exports.iter().any(|e| e == n);
        match (has("init"), has("process"), has("next"), has("on-timer")) {
            (true, true, false, false) => Ok(World::Transform),
            (true, true, false, true) if !has("check-state") => bail!(
                "{} was built against an earlier `stateful` world, without `check-state`: \
                 rebuild it with the current SDK (sluice_sdk::stateful!, or the Python and \
                 JavaScript helpers, which accept every state unless told otherwise)",
                self.path.display()
            ),
            (true, true, false, true) => Ok(World::Stateful),
            (true, false, true, false) => Ok(World::Source),
            _ => bail!(
                "{} is a component but not a Sluice plugin: it exports [{}], while the `transform` world \
                 of {CONTRACT} exports `init` and `process`, the `stateful` world `init`, `process`, \
                 `on-timer` and `check-state`, and the `source` world `init` and `next`; build it with \
                 sluice_sdk::transform!, sluice_sdk::stateful! or sluice_sdk::source!",
                self.path.display(),
                exports.join(", ")
            ),
        }
    }
}

fn type_name(t: &wasmtime::component::Type) -> String {
    use wasmtime::component::Type;
    match t {
        Type::List(l) => format!("list<{}>", type_name(&l.ty())),
        Type::Result(r) => format!(
            "result<{}, {}>",
            r.ok().map_or("_".into(), |t| type_name(&t)),
            r.err().map_or("_".into(), |t| type_name(&t))
        ),
        Type::Tuple(tu) => format!(
            "tuple<{}>",
            tu.types()
                .map(|t| type_name(&t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}").to_lowercase(),
    }
}

enum Pre {
    Transform(bindings::transform::TransformPre<HostState>),
    Source(bindings::source::SourcePre<HostState>),
    Stateful(bindings::stateful::StatefulPre<HostState>),
}

/// A loaded plugin version: checked against its world, ready to instantiate.
pub struct Plugin {
    pub name: Arc<str>,
    pub world: World,
    pub compiled: Compiled,
    pub config: Vec<(String, String)>,
    pub limits: Limits,
    /// The largest linear memory an instance of this version grew to, in bytes.
    pub memory_peak: Arc<std::sync::atomic::AtomicU64>,
    pre: Pre,
    engine: Arc<PluginEngine>,
}

impl Plugin {
    fn new_store(&self) -> wasmtime::Store<HostState> {
        let mut store = wasmtime::Store::new(
            &self.engine.engine,
            HostState::new(
                self.name.clone(),
                limits::MemoryWatch {
                    limits: self.limits.store_limits(),
                    peak: self.memory_peak.clone(),
                },
                self.limits.capabilities.unwrap_or(match self.world {
                    World::Source => Capabilities::ALL,
                    World::Transform | World::Stateful => Capabilities::default(),
                }),
            ),
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store
    }
}
