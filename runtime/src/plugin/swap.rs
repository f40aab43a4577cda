//! Hot swap: one slot per transform position of a pipeline. A new version is compiled, checked
//! against the world, instantiated and `init`-ed by [`PluginSlot::swap`] (a stateful one also
//! reads a sample of the state it takes over) before it is published;
//! workers pick it up at their next batch boundary. Right after a swap the new version is on
//! probation: if its failure rate crosses the threshold, the previous version comes back by
//! itself ([`PluginSlot::observe`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Result};

use super::{BatchError, Limits, Plugin, PluginEngine, TransformInstance, World};
use crate::state::StateStore;
use crate::sync::Locked;

/// Previous versions kept loadable for rollback.
pub(super) const HISTORY: usize = 4;

/// What a new version of a stateful plugin is asked to read before it takes the state over:
/// entries from this many lanes, and from each at most this many.
const SAMPLE_LANES: usize = 16;
const SAMPLE_PER_LANE: usize = 64;

/// When a freshly swapped-in version is rolled back by itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollbackPolicy {
    /// Roll back when this fraction of the records it processed failed (0..=1)...
    pub max_failure_rate: f64,
    /// ...within its first this many records...
    pub window_records: u64,
    /// ...or this long, whichever ends first.
    pub window: Duration,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        RollbackPolicy {
            max_failure_rate: 0.5,
            window_records: 1000,
            window: Duration::from_secs(30),
        }
    }
}

/// One loaded version of a plugin.
pub struct Version {
    pub plugin: Arc<Plugin>,
    pub loaded_at: SystemTime,
    /// What brought it in: `start`, `watch`, `sighup`, `api`, `rollback`.
    pub origin: &'static str,
    /// Set when it was rolled back: a batch it processed is processed again by the restored
    /// version, so every record's output comes from exactly one version.
    rolled_back: AtomicBool,
    /// Records it processed, and of those failed (for metrics).
    pub records: AtomicU64,
    pub failures: AtomicU64,
}

impl Version {
    pub fn new(plugin: Arc<Plugin>, origin: &'static str) -> Arc<Self> {
        Arc::new(Version {
            plugin,
            loaded_at: SystemTime::now(),
            origin,
            rolled_back: AtomicBool::new(false),
            records: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    pub fn rolled_back(&self) -> bool {
        self.rolled_back.load(Ordering::Acquire)
    }
}

struct Probation {
    since: Instant,
    records: u64,
    failures: u64,
}

struct SlotState {
    live: Arc<Version>,
    /// Most recent first.
    history: VecDeque<Arc<Version>>,
    probation: Option<Probation>,
}

/// Counters of a slot, for the admin API and metrics.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SlotCounters {
    pub swaps: u64,
    pub rollbacks: u64,
    pub failed_loads: u64,
    pub last_error: Option<String>,
}

pub struct PluginSlot {
    pub pipeline: String,
    /// Position in the pipeline's chain.
    pub index: usize,
    /// The file the pipeline names: watched with --watch, reloaded on SIGHUP.
    pub configured: Mutex<PathBuf>,
    pub(super) engine: Arc<PluginEngine>,
    pub(super) settings: Mutex<Vec<(String, String)>>,
    pub(super) limits: Limits,
    policy: RollbackPolicy,
    generation: AtomicU64,
    state: Mutex<SlotState>,
    counters: Mutex<SlotCounters>,
    /// Serializes swaps: loading happens outside the state lock.
    swapping: tokio::sync::Mutex<()>,
    /// Where a stateful plugin's state is checkpointed, and its stage in the chain: a new
    /// version must read it.
    checkpoints: OnceLock<(Arc<StateStore>, usize)>,
    /// A candidate version run beside the live one, its outputs compared, never written.
    pub(super) shadow: Mutex<Option<Arc<super::Shadow>>>,
}

/// A slot as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotView {
    pub pipeline: String,
    pub index: usize,
    pub name: String,
    pub path: String,
    pub sha256: String,
    pub loaded_at_ms: u128,
    pub origin: &'static str,
    pub status: &'static str,
    /// Records the live version processed, and of those failed.
    pub records: u64,
    pub failures: u64,
    /// While on probation: what it has processed since the swap, and the failure rate that
    /// rolls it back.
    pub probation: Option<ProbationView>,
    pub history: Vec<String>,
    /// The shadow run's comparison so far, when one runs.
    pub shadow: Option<super::ShadowReport>,
    #[serde(flatten)]
    pub counters: SlotCounters,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbationView {
    pub records: u64,
    pub failures: u64,
    pub max_failure_rate: f64,
    /// Probation ends after this many records or this many milliseconds, whichever is first.
    pub window_records: u64,
    pub remaining_ms: u64,
}

impl PluginSlot {
    pub fn new(
        pipeline: &str,
        index: usize,
        plugin: Arc<Plugin>,
        engine: Arc<PluginEngine>,
        settings: Vec<(String, String)>,
        policy: RollbackPolicy,
    ) -> Arc<Self> {
        Arc::new(PluginSlot {
            pipeline: pipeline.to_owned(),
            index,
            configured: Mutex::new(plugin.compiled.path.clone()),
            limits: plugin.limits,
            engine,
            settings: Mutex::new(settings),
            policy,
            generation: AtomicU64::new(0),
            state: Mutex::new(SlotState {
                live: Version::new(plugin, "start"),
                history: VecDeque::new(),
                probation: None,
            }),
            counters: Mutex::new(SlotCounters::default()),
            swapping: tokio::sync::Mutex::new(()),
            checkpoints: OnceLock::new(),
            shadow: Mutex::new(None),
        })
    }

    /// The slot's state is checkpointed in `store` as stage `stage` of its chain: a new version
    /// is swapped in only if it reads a sample of it.
    pub fn keep_state_in(&self, store: Arc<StateStore>, stage: usize) {
        let _ = self.checkpoints.set((store, stage));
    }

    /// Entries of the state this slot's plugin keeps, for a new version to read.
    async fn state_sample(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.checkpoints.get() {
            Some((store, stage)) => store
                .sample(*stage, SAMPLE_LANES, SAMPLE_PER_LANE)
                .await
                .map_err(|e| anyhow!("reading the state to check the new version against: {e:#}")),
            None => Ok(Vec::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock leaves consistent data (plain assignments).
        self.state.locked()
    }

    fn counters(&self) -> MutexGuard<'_, SlotCounters> {
        self.counters.locked()
    }

    /// Bumped by every swap and rollback; workers compare it at batch boundaries.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn live(&self) -> Arc<Version> {
        self.state().live.clone()
    }

    /// Loads `path` and, if every check passes, makes it the live version. On any failure the
    /// running version stays and the error is returned (and counted).
    pub async fn swap(&self, path: &Path, origin: &'static str) -> Result<Arc<Version>> {
        let _one_at_a_time = self.swapping.lock().await;
        let settings = self.settings.locked().clone();
        let (engine, limits, path_owned) = (self.engine.clone(), self.limits, path.to_owned());
        // A stateful version takes over the running one's state: it must be stateful too, and
        // read it.
        let world = self.live().plugin.world;
        let sample = match world {
            World::Stateful => self.state_sample().await,
            _ => Ok(Vec::new()),
        };
        // Compile, check and init off the hot path (and off the async threads).
        let loaded = tokio::task::spawn_blocking(move || -> Result<Arc<Plugin>> {
            let sample = sample?;
            let plugin = engine.load(&path_owned, settings, limits)?;
            if plugin.world != world {
                return Err(anyhow!(
                    "{} implements the `{}` world; this slot runs a `{world}` plugin",
                    path_owned.display(),
                    plugin.world
                ));
            }
            // A probe instance: instantiation and `init` must succeed before anything changes.
            let mut probe = TransformInstance::new(plugin.clone())?;
            if world == World::Stateful {
                probe.check_state(&sample).map_err(|e| {
                    let why = match e {
                        BatchError::Failed { message, .. } => message,
                        other => other.to_string(),
                    };
                    anyhow!(
                        "{} cannot read the state this slot keeps ({} entries shown to it): {why}",
                        path_owned.display(),
                        sample.len()
                    )
                })?;
            }
            Ok(plugin)
        })
        .await
        .map_err(|e| anyhow!("loading panicked: {e}"))?;
        let plugin = match loaded {
            Ok(p) => p,
            Err(e) => {
                let mut c = self.counters();
                c.failed_loads += 1;
                c.last_error = Some(format!("{e:#}"));
                tracing::error!(pipeline = %self.pipeline, slot = self.index, "new version rejected, the running one stays: {e:#}");
                return Err(e);
            }
        };
        let version = Version::new(plugin, origin);
        {
            let mut state = self.state();
            if state.live.plugin.compiled.sha256 == version.plugin.compiled.sha256
                && state.live.plugin.config == version.plugin.config
            {
                return Ok(state.live.clone());
            }
            let previous = std::mem::replace(&mut state.live, version.clone());
            state.history.push_front(previous);
            state.history.truncate(HISTORY);
            state.probation = Some(Probation {
                since: Instant::now(),
                records: 0,
                failures: 0,
            });
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.counters().swaps += 1;
        tracing::info!(pipeline = %self.pipeline, slot = self.index, plugin = %version.plugin.name, sha256 = %version.plugin.compiled.sha256, origin, "swapped in a new version");
        Ok(version)
    }

    /// Makes the previous version live again. `None` if there is none.
    pub fn rollback(&self, why: &str) -> Option<Arc<Version>> {
        let mut state = self.state();
        let previous = state.history.pop_front()?;
        let bad = std::mem::replace(&mut state.live, previous.clone());
        bad.rolled_back.store(true, Ordering::Release);
        state.probation = None;
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(state);
        self.counters().rollbacks += 1;
        tracing::warn!(pipeline = %self.pipeline, slot = self.index, from = %bad.plugin.compiled.sha256, to = %previous.plugin.compiled.sha256, "rolled back: {why}");
        Some(previous)
    }

    /// A worker reports a batch `version` processed: `records` in, `failures` of them failed.
    /// During probation this may roll the version back.
    pub fn observe(&self, version: &Arc<Version>, records: u64, failures: u64) {
        version.records.fetch_add(records, Ordering::Relaxed);
        version.failures.fetch_add(failures, Ordering::Relaxed);
        let mut state = self.state();
        if !Arc::ptr_eq(&state.live, version) {
            return;
        }
        let Some(p) = &mut state.probation else {
            return;
        };
        p.records += records;
        p.failures += failures;
        let (n, failed, age) = (p.records, p.failures, p.since.elapsed());
        if n > 0 && failed as f64 / n as f64 > self.policy.max_failure_rate {
            drop(state);
            self.rollback(&format!(
                "{failed} of its first {n} records failed (more than {:.0}%)",
                self.policy.max_failure_rate * 100.0
            ));
        } else if n >= self.policy.window_records || age >= self.policy.window {
            state.probation = None;
            tracing::info!(pipeline = %self.pipeline, slot = self.index, records = n, failures = failed, "new version passed probation");
        }
    }

    /// The live version (true) and the ones kept for rollback.
    pub fn versions(&self) -> Vec<(Arc<Version>, bool)> {
        let state = self.state();
        std::iter::once((state.live.clone(), true))
            .chain(state.history.iter().map(|v| (v.clone(), false)))
            .collect()
    }

    pub fn counters_snapshot(&self) -> SlotCounters {
        self.counters().clone()
    }

    pub fn set_settings(&self, settings: Vec<(String, String)>) {
        *self.settings.locked() = settings;
    }

    pub fn view(&self) -> SlotView {
        // Taken before the state lock: no lock is held while the other is taken.
        let shadow = self.shadow().map(|s| s.report());
        let state = self.state();
        let live = &state.live;
        SlotView {
            pipeline: self.pipeline.clone(),
            index: self.index,
            name: live.plugin.name.to_string(),
            path: live.plugin.compiled.path.display().to_string(),
            sha256: live.plugin.compiled.sha256.clone(),
            loaded_at_ms: live
                .loaded_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            origin: live.origin,
            status: if state.probation.is_some() {
                "probation"
            } else {
                "live"
            },
            records: live.records.load(Ordering::Relaxed),
            failures: live.failures.load(Ordering::Relaxed),
            probation: state.probation.as_ref().map(|p| ProbationView {
                records: p.records,
                failures: p.failures,
                max_failure_rate: self.policy.max_failure_rate,
                window_records: self.policy.window_records,
                remaining_ms: self
                    .policy
                    .window
                    .saturating_sub(p.since.elapsed())
                    .as_millis() as u64,
            }),
            history: state
                .history
                .iter()
                .map(|v| v.plugin.compiled.sha256.clone())
                .collect(),
            shadow,
            counters: self.counters().clone(),
        }
    }
}

/// A worker's instance of one slot, refreshed at batch boundaries.
pub struct Stage {
    pub slot: Arc<PluginSlot>,
    pub version: Arc<Version>,
    generation: u64,
    pub instance: TransformInstance,
}

impl Stage {
    pub fn new(slot: Arc<PluginSlot>) -> Result<Self> {
        let generation = slot.generation();
        let version = slot.live();
        let instance = TransformInstance::new(version.plugin.clone())?;
        Ok(Stage {
            slot,
            version,
            generation,
            instance,
        })
    }

    /// Cuts over to the slot's live version if it changed. Returns how long the cut-over took.
    pub fn refresh(&mut self) -> Option<Duration> {
        let generation = self.slot.generation();
        if generation == self.generation {
            return None;
        }
        let started = Instant::now();
        let version = self.slot.live();
        if !Arc::ptr_eq(&version, &self.version) {
            match TransformInstance::new(version.plugin.clone()) {
                Ok(instance) => {
                    self.instance = instance;
                    self.version = version;
                }
                Err(e) => {
                    // It passed the probe instance, so this is unexpected: keep the old one.
                    tracing::error!(pipeline = %self.slot.pipeline, slot = self.slot.index, "cannot cut over, keeping the running version: {e:#}");
                }
            }
        }
        self.generation = generation;
        Some(started.elapsed())
    }
}

impl PluginSlot {
    pub fn configured_path(&self) -> PathBuf {
        self.configured.locked().clone()
    }

    /// Whether `name` names this slot: its position, or its file name with or without `.wasm`.
    pub fn is_named(&self, name: &str) -> bool {
        if let Ok(i) = name.parse::<usize>() {
            return i == self.index;
        }
        let path = self.configured_path();
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        file == name || file.strip_suffix(".wasm") == Some(name)
    }
}
