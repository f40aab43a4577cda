//! Live plugin instances, one per worker: encode a batch, call the plugin under its limits,
//! decode what comes back. A trap poisons a component instance, so the next call gets a fresh
//! one (microseconds with the pooling allocator).

use std::sync::Arc;

use anyhow::{anyhow, Result};
use bytes::Bytes;
use sluice_wire as wire;
use wasmtime::{Store, Trap};

use super::bindings::{source::Source, transform::Transform, HostState};
use super::{Plugin, Pre};
use crate::record::{Origin, Record};

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

/// A transform plugin instance with its own store.
pub struct TransformInstance {
    plugin: Arc<Plugin>,
    live: Option<(Store<HostState>, Transform)>,
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

    fn instantiate(plugin: &Plugin) -> Result<(Store<HostState>, Transform)> {
        instantiate(
            plugin,
            |store, pre| match pre {
                Pre::Transform(pre) => pre.instantiate(store),
                Pre::Source(_) => wasmtime::bail!("expected a transform plugin"),
            },
            |b: &Transform, store| b.call_init(store, &plugin.config),
        )
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Runs one batch through the plugin.
    pub fn process(&mut self, records: &[Record]) -> Result<Processed, BatchError> {
        let name = &self.plugin.name;
        if self.live.is_none() {
            let fresh = Self::instantiate(&self.plugin).map_err(|e| BatchError::Restart {
                plugin: name.clone(),
                message: format!("{e:#}"),
            })?;
            self.live = Some(fresh);
        }
        let (store, bindings) = self.live.as_mut().expect("instantiated above");

        self.input.clear();
        let at = wire::begin_count(&mut self.input);
        for r in records {
            put_record(&mut self.input, r);
        }
        wire::patch_count(&mut self.input, at, records.len() as u32);

        arm(&self.plugin, store);
        match bindings.call_process(&mut *store, &self.input) {
            Ok(Ok(out)) => {
                decode_outcomes(Bytes::from(out), records).map_err(|error| BatchError::Malformed {
                    plugin: name.clone(),
                    error,
                })
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

fn decode_outcomes(buf: Bytes, inputs: &[Record]) -> Result<Processed, wire::WireError> {
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
                    record.origin.clone_from(&input.origin);
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
                Pre::Transform(_) => wasmtime::bail!("expected a source plugin"),
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
