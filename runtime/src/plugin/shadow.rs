//! Shadow runs: a candidate version of a slot's plugin processes every batch the live version
//! processes, with its own instance in a thread of its own, and its outputs are compared with
//! the live ones record by record (JSON-aware); they are never written. The live stream never
//! waits for it: a batch offered while it is still busy with earlier ones is skipped and
//! counted. It runs in the idle scheduling class and rests between batches, so it takes at most
//! a quarter of a core, and only what the live stream leaves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BatchError, TransformInstance, Version};
use crate::format::json_diff::json_diff;
use crate::record::Record;
use crate::sync::Locked;

/// Batches waiting for the shadow; more are skipped.
const QUEUE: usize = 4;
/// The shadow rests this many times as long as each batch took it: it uses at most a quarter
/// of a core, whatever the live stream leaves idle.
const REST_PER_BUSY: u32 = 3;
/// Differences kept as examples.
const SAMPLE: usize = 20;

/// What one input record became: its outputs, or the error it failed with.
pub type Outcome = Result<Vec<Record>, String>;

/// A batch the live version processed, offered to the shadow.
struct Offered {
    inputs: Vec<Record>,
    live: Vec<Outcome>,
    live_took: Duration,
}

/// One record whose outputs differ.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    pub position: String,
    pub live: Value,
    pub shadow: Value,
    /// Where they differ (`$.field: not expected, got 2`), JSON paths of the live output.
    pub diff: Vec<String>,
}

/// The comparison so far, as `GET …/shadow` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShadowReport {
    pub sha256: String,
    pub path: String,
    /// Records both versions processed, and of those: the same outputs, different outputs,
    /// failed in the shadow only, failed in the live version only, failed in both.
    pub compared: u64,
    pub equal: u64,
    pub different: u64,
    pub shadow_failed: u64,
    pub live_failed: u64,
    pub both_failed: u64,
    /// Batches the shadow was too busy to take.
    pub skipped_batches: u64,
    pub batches: u64,
    /// Mean time of one batch through each version, in microseconds.
    pub live_batch_us: u64,
    pub shadow_batch_us: u64,
    pub sample: Vec<Difference>,
    #[serde(skip)]
    live_us_total: u64,
    #[serde(skip)]
    shadow_us_total: u64,
}

/// A running shadow of one slot.
pub struct Shadow {
    pub version: Arc<Version>,
    queue: SyncSender<Offered>,
    /// Batches offered and not yet compared.
    queued: Arc<AtomicUsize>,
    report: Arc<Mutex<ShadowReport>>,
}

impl Shadow {
    /// Runs `instance` (of `version`) as a shadow until the returned value is dropped.
    pub fn start(version: Arc<Version>, mut instance: TransformInstance) -> Arc<Self> {
        let (queue, batches) = sync_channel::<Offered>(QUEUE);
        let report = Arc::new(Mutex::new(ShadowReport {
            sha256: version.plugin.compiled.sha256.clone(),
            path: version.plugin.compiled.path.display().to_string(),
            ..Default::default()
        }));
        let kept = report.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        let name = format!("shadow-{}", version.plugin.name);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            idle_priority();
            // Ends when the shadow is dropped (its sender with it).
            while let Ok(batch) = batches.recv() {
                let started = Instant::now();
                let shadow = outcomes(&mut instance, &batch.inputs);
                let took = started.elapsed();
                compare(&mut kept.locked(), &batch, &shadow, took);
                taken.fetch_sub(1, Ordering::AcqRel);
                std::thread::sleep(started.elapsed() * REST_PER_BUSY);
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the shadow's thread: {e}");
        }
        Arc::new(Shadow {
            version,
            queue,
            queued,
            report,
        })
    }

    /// Whether the shadow takes the next batch: else it is counted as skipped, and the live
    /// path spends nothing on it.
    pub fn takes_batch(&self) -> bool {
        if self.queued.load(Ordering::Acquire) < QUEUE {
            return true;
        }
        self.report.locked().skipped_batches += 1;
        false
    }

    /// Hands a batch the live version processed to the shadow (after [`Shadow::takes_batch`]).
    pub fn offer(&self, inputs: Vec<Record>, live: Vec<Outcome>, live_took: Duration) {
        let offered = Offered {
            inputs,
            live,
            live_took,
        };
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(offered).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.report.locked().skipped_batches += 1;
        }
    }

    pub fn report(&self) -> ShadowReport {
        let mut r = self.report.locked().clone();
        r.live_batch_us = r.live_us_total.checked_div(r.batches).unwrap_or(0);
        r.shadow_batch_us = r.shadow_us_total.checked_div(r.batches).unwrap_or(0);
        r
    }
}

/// Puts the calling thread in Linux's idle scheduling class: it runs only on CPU time the
/// live pipeline leaves over, so a busy shadow takes no time from it (it skips batches instead).
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a system call on the calling thread (pid 0) with a valid, initialised parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::warn!(
            "the shadow runs at normal priority (SCHED_IDLE refused: {}): it may slow the live stream",
            std::io::Error::last_os_error()
        );
    }
}

/// Each input's outcome through the shadow; a batch that fails as a whole is run again one
/// record at a time, so each record gets its own outcome.
fn outcomes(instance: &mut TransformInstance, inputs: &[Record]) -> Vec<Outcome> {
    match instance.process(inputs, None) {
        Ok(processed) => {
            let mut outputs = processed.outputs.into_iter();
            processed
                .outcomes
                .into_iter()
                .map(|o| o.map(|n| outputs.by_ref().take(n as usize).collect()))
                .collect()
        }
        Err(e @ BatchError::Restart { .. }) => inputs.iter().map(|_| Err(e.to_string())).collect(),
        Err(e) if inputs.len() == 1 => vec![Err(e.to_string())],
        Err(_) => inputs
            .iter()
            .flat_map(|r| outcomes(instance, std::slice::from_ref(r)))
            .collect(),
    }
}

fn compare(report: &mut ShadowReport, batch: &Offered, shadow: &[Outcome], took: Duration) {
    report.batches += 1;
    report.live_us_total += batch.live_took.as_micros() as u64;
    report.shadow_us_total += took.as_micros() as u64;
    for ((input, live), shadow) in batch.inputs.iter().zip(&batch.live).zip(shadow) {
        report.compared += 1;
        let diff = match (live, shadow) {
            (Err(_), Err(_)) => {
                report.both_failed += 1;
                continue;
            }
            (Ok(_), Err(_)) => {
                report.shadow_failed += 1;
                vec!["failed in the shadow only".to_owned()]
            }
            (Err(_), Ok(_)) => {
                report.live_failed += 1;
                vec!["failed in the live version only".to_owned()]
            }
            (Ok(l), Ok(s)) => {
                let diff = outputs_diff(l, s);
                if diff.is_empty() {
                    report.equal += 1;
                    continue;
                }
                report.different += 1;
                diff
            }
        };
        if report.sample.len() < SAMPLE {
            report.sample.push(Difference {
                position: input.position(),
                live: shown(live),
                shadow: shown(shadow),
                diff,
            });
        }
    }
}

/// How two versions' outputs of one record differ: keys, and values as JSON (numbers by value,
/// keys in any order) or as bytes.
fn outputs_diff(live: &[Record], shadow: &[Record]) -> Vec<String> {
    if live.len() != shadow.len() {
        return vec![format!(
            "{} output(s) live, {} in the shadow",
            live.len(),
            shadow.len()
        )];
    }
    let mut diff = Vec::new();
    for (i, (l, s)) in live.iter().zip(shadow).enumerate() {
        let at = if live.len() == 1 {
            "$".to_owned()
        } else {
            format!("[{i}]$")
        };
        if l.key != s.key {
            diff.push(format!(
                "{at} key: {:?} live, {:?} in the shadow",
                l.key, s.key
            ));
        }
        if l.value == s.value {
            continue;
        }
        match (
            serde_json::from_slice::<Value>(&l.value),
            serde_json::from_slice::<Value>(&s.value),
        ) {
            (Ok(lv), Ok(sv)) => json_diff(&at, &lv, &sv, &mut diff),
            _ if l.value != s.value => diff.push(format!("{at}: the values differ")),
            _ => {}
        }
    }
    diff
}

/// An outcome for the sample: the outputs' values (JSON as it is, else text), or the error.
fn shown(outcome: &Outcome) -> Value {
    match outcome {
        Err(e) => serde_json::json!({ "error": e }),
        Ok(outputs) => Value::Array(
            outputs
                .iter()
                .map(|r| {
                    serde_json::from_slice(&r.value).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&r.value).into_owned())
                    })
                })
                .collect(),
        ),
    }
}

impl super::PluginSlot {
    /// Loads `path` as this slot's shadow (replacing any): the same checks as a swap, a
    /// stateless plugin only (a stateful one would need the live version's state).
    pub async fn start_shadow(&self, path: &std::path::Path) -> anyhow::Result<Arc<Shadow>> {
        let settings = self.settings.locked().clone();
        let (engine, limits, path_owned) = (self.engine.clone(), self.limits, path.to_owned());
        let world = self.live().plugin.world;
        let instance = tokio::task::spawn_blocking(move || {
            let plugin = engine.load(&path_owned, settings, limits)?;
            if world != super::World::Transform || plugin.world != super::World::Transform {
                anyhow::bail!(
                    "{}: only a `transform` plugin runs as a shadow, beside a `transform` one \
                     (this is a `{}` one, the slot runs a `{world}` one): a stateful shadow \
                     would need the live version's state",
                    path_owned.display(),
                    plugin.world
                );
            }
            TransformInstance::new(plugin)
        })
        .await
        .map_err(|e| anyhow::anyhow!("loading panicked: {e}"))??;
        let version = Version::new(instance.plugin().clone(), "shadow");
        let shadow = Shadow::start(version, instance);
        *self.shadow.locked() = Some(shadow.clone());
        tracing::info!(pipeline = %self.pipeline, slot = self.index, sha256 = %shadow.version.plugin.compiled.sha256, "shadow run started");
        Ok(shadow)
    }

    pub fn shadow(&self) -> Option<Arc<Shadow>> {
        self.shadow.locked().clone()
    }

    /// Stops the shadow run; its last report.
    pub fn stop_shadow(&self) -> Option<ShadowReport> {
        let shadow = self.shadow.locked().take()?;
        tracing::info!(pipeline = %self.pipeline, slot = self.index, "shadow run stopped");
        Some(shadow.report())
    }

    /// Swaps the shadow in through the usual validated cut-over, then stops the shadow run.
    pub async fn promote_shadow(&self) -> anyhow::Result<Arc<Version>> {
        let shadow = self
            .shadow()
            .ok_or_else(|| anyhow::anyhow!("no shadow run to promote: start one first"))?;
        let version = self
            .swap(&shadow.version.plugin.compiled.path, "shadow")
            .await?;
        let mut running = self.shadow.locked();
        if running.as_ref().is_some_and(|s| Arc::ptr_eq(s, &shadow)) {
            *running = None;
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(values: &[&str]) -> Vec<Record> {
        values.iter().map(|v| Record::new(v.to_string())).collect()
    }

    #[test]
    fn outputs_compare_as_json_and_name_what_differs() {
        let same = outputs_diff(
            &out(&[r#"{"a":39,"b":"x"}"#]),
            &out(&[r#"{"b":"x","a":39.0}"#]),
        );
        assert!(same.is_empty(), "{same:?}");
        let added = outputs_diff(&out(&[r#"{"a":1}"#]), &out(&[r#"{"a":1,"v":2}"#]));
        assert_eq!(added, ["$.v: not expected, got 2"]);
        assert_eq!(
            outputs_diff(&out(&["a"]), &out(&["b"])),
            ["$: the values differ"]
        );
        assert_eq!(
            outputs_diff(&out(&["a"]), &out(&["a", "a"])),
            ["1 output(s) live, 2 in the shadow"]
        );
    }

    #[test]
    fn each_record_lands_in_one_count_and_differences_are_sampled() {
        let batch = Offered {
            inputs: out(&["1", "2", "3", "4"]),
            live: vec![
                Ok(out(&["1"])),
                Ok(out(&["2"])),
                Err("bad".into()),
                Err("bad".into()),
            ],
            live_took: Duration::from_micros(10),
        };
        let shadow = vec![
            Ok(out(&["1"])),
            Err("trap".into()),
            Ok(out(&["3"])),
            Err("x".into()),
        ];
        let mut report = ShadowReport::default();
        compare(&mut report, &batch, &shadow, Duration::from_micros(30));
        assert_eq!(
            (
                report.compared,
                report.equal,
                report.shadow_failed,
                report.live_failed,
                report.both_failed
            ),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(report.sample.len(), 2);
        assert_eq!(
            report.sample[0].shadow,
            serde_json::json!({"error": "trap"})
        );
    }
}
