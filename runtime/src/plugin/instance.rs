//! Live plugin instances, one per worker: encode a batch, call the plugin under its limits,
//! decode what comes back. A trap poisons a component instance, so the next call gets a fresh
//! one (microseconds with the pooling allocator).

use std::sync::Arc;

use anyhow::{anyhow, Result};
use bytes::Bytes;
use sluice_wire as wire;
use wasmtime::{Store, Trap};

use super::bindings::{
    source::Source, stateful::Stateful, timers, transform::Transform, HostState,
};
use super::{Plugin, Pre};
use crate::record::{Origin, Record};
use crate::state::{Domain, LaneCall, Timer};

/// Timers fired after one batch of a lane at most.
const FIRED_PER_BATCH: usize = 1_000_000;

/// Why a whole batch failed. Each input record's own failure is an outcome, not this.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The plugin trapped, ran past its deadline or its memory cap.
    #[error("plugin {plugin} {message}")]
    Trap { plugin: Arc<str>, message: String },
    /// The plugin returned an error for the whole batch.
    #[error("plugin {plugin} failed the batch: {message}")]
    Failed { plugin: Arc<str>, message: String },
    /// The plugin returned a buffer that is not in the wire form.
    #[error("plugin {plugin} returned a malformed result: {error}")]
    Malformed {
        plugin: Arc<str>,
        error: wire::WireError,
    },
    /// A fresh instance could not be made after a trap.
    #[error("plugin {plugin} cannot be restarted: {message}")]
    Restart { plugin: Arc<str>, message: String },
}

/// The outputs of a batch: input `i` produced `outcomes[i]` outputs (taken in order from
/// `outputs`) or failed with that error.
#[derive(Debug, Default)]
pub struct Processed {
    pub outputs: Vec<Record>,
    pub outcomes: Vec<Result<u32, String>>,
}

fn instantiate<B>(
    plugin: &Plugin,
    make: impl FnOnce(&mut Store<HostState>, &Pre) -> wasmtime::Result<B>,
    init: impl FnOnce(&B, &mut Store<HostState>) -> wasmtime::Result<Result<(), String>>,
) -> Result<(Store<HostState>, B)> {
    let mut store = plugin.new_store();
    arm(plugin, &mut store);
    let bindings = make(&mut store, &plugin.pre)
        .map_err(|e| anyhow!("cannot instantiate plugin {}: {e:#}", plugin.name))?;
    match init(&bindings, &mut store) {
        Ok(Ok(())) => Ok((store, bindings)),
        Ok(Err(msg)) => Err(anyhow!(
            "plugin {} refused its config in `init`: {msg}",
            plugin.name
        )),
        Err(trap) => Err(anyhow!(
            "plugin {} {} in `init`",
            plugin.name,
            describe_trap(plugin, &store, &trap)
        )),
    }
}

/// The budget of one call: the epoch deadline, and fuel when the engine meters it.
fn arm(plugin: &Plugin, store: &mut Store<HostState>) {
    store.set_epoch_deadline(plugin.limits.deadline_ticks());
    if plugin.engine.fuel {
        // Cannot fail: the engine meters fuel.
        let _ = store.set_fuel(plugin.limits.fuel.unwrap_or(u64::MAX));
    }
}

/// Words for a trap: deadline, fuel, memory cap, or the plugin's own panic message.
fn describe_trap(plugin: &Plugin, store: &Store<HostState>, error: &wasmtime::Error) -> String {
    if let Some(Trap::OutOfFuel) = error.downcast_ref::<Trap>() {
        return format!(
            "ran out of its fuel of {} per batch (an endless loop?); raise --fuel if the work is real",
            plugin.limits.fuel.unwrap_or(u64::MAX)
        );
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return format!(
            "ran past its batch deadline of {:?} (an endless loop?); raise --batch-deadline-ms if the work is real",
            plugin.limits.batch_deadline
        );
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") {
        return format!(
            "exceeded its memory limit of {} MiB; raise --memory-limit-mib if the plugin really needs more",
            plugin.limits.memory_bytes >> 20
        );
    }
    let trap = error
        .downcast_ref::<Trap>()
        .map_or_else(|| error.root_cause().to_string(), |t| t.to_string());
    match store.data().last_stderr_line() {
        Some(line) => format!("trapped ({trap}): {line}"),
        None => format!("trapped ({trap})"),
    }
}

/// The exports of a transform: stateless, or with state and timers.
enum Exports {
    Transform(Transform),
    Stateful(Stateful),
}

/// A timer fired: its sequence number among its lane's fired timers, and its outputs or error.
pub type FiredTimer = (u64, Result<Vec<Record>, String>);

/// A transform plugin instance (either world) with its own store.
pub struct TransformInstance {
    plugin: Arc<Plugin>,
    live: Option<(Store<HostState>, Exports)>,
    input: Vec<u8>,
}

impl TransformInstance {
    /// Instantiates the plugin and runs its `init`; errors name the plugin.
    pub fn new(plugin: Arc<Plugin>) -> Result<Self> {
        let live = Some(Self::instantiate(&plugin)?);
        Ok(TransformInstance {
            plugin,
            live,
            input: Vec::new(),
        })
    }

    fn instantiate(plugin: &Plugin) -> Result<(Store<HostState>, Exports)> {
        match &plugin.pre {
            Pre::Stateful(_) => instantiate(
                plugin,
                |store, pre| match pre {
                    Pre::Stateful(pre) => pre.instantiate(store).map(Exports::Stateful),
                    _ => wasmtime::bail!("expected a stateful plugin"),
                },
                |b: &Exports, store| match b {
                    Exports::Stateful(b) => b.call_init(store, &plugin.config),
                    Exports::Transform(b) => b.call_init(store, &plugin.config),
                },
            ),
            _ => instantiate(
                plugin,
                |store, pre| match pre {
                    Pre::Transform(pre) => pre.instantiate(store).map(Exports::Transform),
                    _ => wasmtime::bail!("expected a transform plugin"),
                },
                |b: &Exports, store| match b {
                    Exports::Stateful(b) => b.call_init(store, &plugin.config),
                    Exports::Transform(b) => b.call_init(store, &plugin.config),
                },
            ),
        }
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Whether the plugin keeps state and timers (the `stateful` world).
    pub fn is_stateful(&self) -> bool {
        matches!(self.plugin.pre, Pre::Stateful(_))
    }

    /// Runs one batch through the plugin; a stateful one works on `lane` (whose changes the
    /// caller keeps or undoes by the result).
    pub fn process(
        &mut self,
        records: &[Record],
        lane: Option<&mut LaneCall>,
    ) -> Result<Processed, BatchError> {
        self.input.clear();
        let at = wire::begin_count(&mut self.input);
        for r in records {
            put_record(&mut self.input, r);
        }
        wire::patch_count(&mut self.input, at, records.len() as u32);
        let input = std::mem::take(&mut self.input);
        let result = self.call(lane, |store, exports| match exports {
            Exports::Transform(b) => b.call_process(store, &input),
            Exports::Stateful(b) => b.call_process(store, &input),
        });
        self.input = input;
        let out = result?;
        decode_outcomes(Bytes::from(out), records, |input, record| {
            record.origin.clone_from(&input.origin)
        })
        .map_err(|error| BatchError::Malformed {
            plugin: self.plugin.name.clone(),
            error,
        })
    }

    /// Hands fired timers (all of `lane`) to a stateful plugin. The outputs carry no origin:
    /// the caller gives them the lane's timer positions.
    pub fn on_timer(
        &mut self,
        fired: &[Timer],
        lane: &mut LaneCall,
    ) -> Result<Processed, BatchError> {
        let wit: Vec<timers::Fired> = fired
            .iter()
            .map(|t| timers::Fired {
                key: t.key.clone(),
                at_ms: t.at_ms,
                domain: match t.domain {
                    Domain::Event => timers::Domain::EventTime,
                    Domain::Processing => timers::Domain::ProcessingTime,
                },
            })
            .collect();
        let out = self.call(Some(lane), |store, exports| match exports {
            Exports::Stateful(b) => b.call_on_timer(store, &wit),
            Exports::Transform(_) => wasmtime::bail!("a stateless plugin has no timers"),
        })?;
        let n = fired.len();
        let inputs = vec![Record::default(); n];
        decode_outcomes(Bytes::from(out), &inputs, |_, _| {}).map_err(|error| {
            BatchError::Malformed {
                plugin: self.plugin.name.clone(),
                error,
            }
        })
    }

    /// Asks a stateful plugin whether it reads `sample`, entries of the state it is to take
    /// over: a refusal is [`BatchError::Failed`] with its reason.
    pub fn check_state(&mut self, sample: &[(Vec<u8>, Vec<u8>)]) -> Result<(), BatchError> {
        self.call(None, |store, exports| match exports {
            Exports::Stateful(b) => Ok(b.call_check_state(store, sample)?.map(|()| Vec::new())),
            Exports::Transform(_) => Ok(Ok(Vec::new())),
        })
        .map(drop)
    }

    /// Fires the lane's timers due (event-time ones at its stream time, processing-time ones at
    /// `lane.now_ms`) through the plugin, in time order, up to `per_call` a call. For each
    /// timer: its sequence number among the lane's fired timers (where its outputs stand) and
    /// its outputs or error. A call that fails as a whole fails each of its timers, which stay
    /// fired (its state changes are undone); only an instance that cannot restart is an error.
    pub fn fire_due(
        &mut self,
        lane: &mut LaneCall,
        per_call: usize,
    ) -> Result<Vec<FiredTimer>, BatchError> {
        let mut fired = Vec::new();
        loop {
            if fired.len() >= FIRED_PER_BATCH {
                // A plugin whose timers keep registering timers already due would hold the
                // worker here for ever: the rest fire after the lane's next batch.
                tracing::warn!(plugin = %self.plugin.name, fired = fired.len(), "timers still due after this many fired for one batch; the rest fire later");
                return Ok(fired);
            }
            let first = lane.state.fired();
            let due = lane.state.take_due(lane.now_ms, per_call);
            if due.is_empty() {
                return Ok(fired);
            }
            let savepoint = lane.state.savepoint();
            match self.on_timer(&due, lane) {
                Ok(processed) => {
                    let mut made = processed.outputs.into_iter();
                    for (k, outcome) in processed.outcomes.into_iter().enumerate() {
                        let outputs = outcome.map(|n| made.by_ref().take(n as usize).collect());
                        fired.push((first + k as u64, outputs));
                    }
                }
                Err(e @ BatchError::Restart { .. }) => return Err(e),
                Err(e) => {
                    lane.state.undo_to(savepoint);
                    let message = e.to_string();
                    fired.extend((0..due.len()).map(|k| (first + k as u64, Err(message.clone()))));
                }
            }
            lane.state.keep();
        }
    }

    /// One call under the plugin's limits, on a fresh instance after a trap; a stateful
    /// plugin's lane is in the store for the call only.
    fn call(
        &mut self,
        mut lane: Option<&mut LaneCall>,
        f: impl FnOnce(&mut Store<HostState>, &Exports) -> wasmtime::Result<Result<Vec<u8>, String>>,
    ) -> Result<Vec<u8>, BatchError> {
        let name = &self.plugin.name;
        if self.live.is_none() {
            let fresh = Self::instantiate(&self.plugin).map_err(|e| BatchError::Restart {
                plugin: name.clone(),
                message: format!("{e:#}"),
            })?;
            self.live = Some(fresh);
        }
        let (store, exports) = self.live.as_mut().expect("instantiated above");
        if let Some(lane) = lane.as_deref_mut() {
            store.data_mut().lane = Some(std::mem::take(lane));
        }
        arm(&self.plugin, store);
        let result = f(&mut *store, exports);
        if let Some(lane) = lane {
            *lane = store.data_mut().lane.take().unwrap_or_default();
        }
        match result {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(message)) => Err(BatchError::Failed {
                plugin: name.clone(),
                message,
            }),
            Err(trap) => {
                let message = describe_trap(&self.plugin, store, &trap);
                self.live = None;
                Err(BatchError::Trap {
                    plugin: name.clone(),
                    message,
                })
            }
        }
    }
}

fn put_record(buf: &mut Vec<u8>, r: &Record) {
    wire::put_message(
        buf,
        &wire::MessageParts {
            key: r.key.as_deref(),
            value: &r.value,
            headers: &r.headers,
            timestamp_ms: r.timestamp_ms,
            origin: r.origin.as_ref().map(|o| o as &dyn wire::PutText),
            output: None,
        },
    );
}

/// Turns a wire message into a record whose bytes are slices of `buf` (no copies).
fn to_record(buf: &Bytes, m: &wire::MessageRef<'_>) -> Record {
    Record {
        key: m.key.map(|k| buf.slice_ref(k)),
        value: buf.slice_ref(m.value),
        headers: m
            .headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), buf.slice_ref(v)))
            .collect(),
        timestamp_ms: m.timestamp_ms,
        origin: None,
        output: m.output.map(str::to_owned),
    }
}

/// The outcomes of `inputs`; `mark` gives each output what it keeps of its input (the origin).
fn decode_outcomes(
    buf: Bytes,
    inputs: &[Record],
    mark: impl Fn(&Record, &mut Record),
) -> Result<Processed, wire::WireError> {
    let mut r = wire::Reader::new(&buf);
    let n = r.count(wire::MIN_OUTCOME_SIZE)? as usize;
    if n != inputs.len() {
        return Err(wire::WireError {
            offset: 0,
            what: "outcome count differs from the number of inputs",
        });
    }
    let mut processed = Processed {
        outputs: Vec::with_capacity(n),
        outcomes: Vec::with_capacity(n),
    };
    for input in inputs {
        match r.outcome()? {
            Ok(count) => {
                for _ in 0..count {
                    let mut record = to_record(&buf, &r.message()?);
                    mark(input, &mut record);
                    processed.outputs.push(record);
                }
                processed.outcomes.push(Ok(count));
            }
            Err(message) => processed.outcomes.push(Err(message.to_owned())),
        }
    }
    r.finish()?;
    Ok(processed)
}

/// A source plugin instance with its own store.
pub struct SourceInstance {
    plugin: Arc<Plugin>,
    live: Option<(Store<HostState>, Source)>,
}

impl SourceInstance {
    pub fn new(plugin: Arc<Plugin>) -> Result<Self> {
        let live = Some(Self::instantiate(&plugin)?);
        Ok(SourceInstance { plugin, live })
    }

    fn instantiate(plugin: &Plugin) -> Result<(Store<HostState>, Source)> {
        instantiate(
            plugin,
            |store, pre| match pre {
                Pre::Source(pre) => pre.instantiate(store),
                _ => wasmtime::bail!("expected a source plugin"),
            },
            |b: &Source, store| b.call_init(store, &plugin.config),
        )
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Asks for up to `max` records. A source that traps is not restarted: its state is gone.
    pub fn next(&mut self, max: u32, now_ms: i64) -> Result<Vec<Record>, BatchError> {
        let name = &self.plugin.name;
        let Some((store, bindings)) = self.live.as_mut() else {
            return Err(BatchError::Restart {
                plugin: name.clone(),
                message: "it trapped earlier".into(),
            });
        };
        arm(&self.plugin, store);
        match bindings.call_next(&mut *store, max, now_ms) {
            Ok(Ok(out)) => {
                let buf = Bytes::from(out);
                let messages = wire::decode_batch(&buf).map_err(|error| BatchError::Malformed {
                    plugin: name.clone(),
                    error,
                })?;
                if messages.len() > max as usize {
                    let error = wire::WireError {
                        offset: 0,
                        what: "more messages than asked for",
                    };
                    return Err(BatchError::Malformed {
                        plugin: name.clone(),
                        error,
                    });
                }
                Ok(messages
                    .iter()
                    .map(|m| {
                        let mut record = to_record(&buf, m);
                        record.origin = m.origin.map(Origin::from);
                        record
                    })
                    .collect())
            }
            Ok(Err(message)) => Err(BatchError::Failed {
                plugin: name.clone(),
                message,
            }),
            Err(trap) => {
                let message = describe_trap(&self.plugin, store, &trap);
                self.live = None;
                Err(BatchError::Trap {
                    plugin: name.clone(),
                    message,
                })
            }
        }
    }
}
