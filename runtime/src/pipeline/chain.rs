//! The plugin chain: each transform in turn on its slot's live version, a failing batch split
//! until the poison records stand alone.

use std::sync::Arc;

use anyhow::Result;

use crate::failure::{ErrorPolicy, Failure};
use crate::plugin::{BatchError, Outcome, Shadow, Stage, TransformInstance};
use crate::record::{Origin, Record};
use crate::state::LaneCall;

/// Timers one `on-timer` call is handed at most.
const TIMERS_PER_CALL: usize = 256;

/// The lane a batch belongs to, with each stateful stage's state in it.
pub(crate) struct LaneSet {
    pub info: LaneInfo,
    /// Per stage index: its state in this lane (unused for stateless stages).
    pub calls: Vec<LaneCall>,
    /// The batch being run is the lane's last (see `SourceBatch::ends_lane`).
    pub ending: bool,
}

/// What a lane's timers need to know of it.
#[derive(Debug, Clone)]
pub(crate) struct LaneInfo {
    /// The lane's origin prefix and separator (`user_sessions/3`, `@`): timer outputs are
    /// positioned in the lane `PREFIX SEP timers#`.
    pub prefix: Arc<str>,
    pub sep: char,
    /// Whether the source reads the lane again after a restart (its timer outputs then have
    /// positions a table passes over).
    pub replayable: bool,
}

impl LaneInfo {
    fn timer_origin(&self, seq: u64) -> Origin {
        let prefix: Arc<str> = format!("{}{}timers", self.prefix, self.sep).into();
        if self.replayable {
            Origin::At(prefix, '#', seq)
        } else {
            Origin::Once(prefix, '#', seq)
        }
    }
}

/// Runs records through each transform in turn, each stage on its slot's live version (cut
/// over here, at the batch boundary). With `fail`, records after the first failure are dropped
/// so that only outputs of records before it are written.
///
/// A record a plugin routes to one of the pipeline's named `outputs` leaves the chain there and
/// is returned with its `output` set (after the records for the main sink); one routed to a
/// name the pipeline lacks is that record's failure.
///
/// A stateful stage works on its state in `lane`; after the batch, the lane's stream time takes
/// the records' timestamps and the timers due fire, their outputs going on like the batch's.
pub(crate) fn run_chain(
    stages: &mut [Stage],
    mut records: Vec<Record>,
    policy: ErrorPolicy,
    outputs: &[Arc<str>],
    mut lane: Option<&mut LaneSet>,
) -> Result<Chained> {
    let mut failures = Vec::new();
    let mut routed = Vec::new();
    let mut routed_inputs = Vec::new();
    // For each record, the index of the batch's input it was made from.
    let mut inputs: Vec<usize> = (0..records.len()).collect();
    let first_timer_input = records.len();
    let info = lane.as_ref().map(|l| l.info.clone());
    let ending = lane.as_ref().is_some_and(|l| l.ending);
    for (index, stage) in stages.iter_mut().enumerate() {
        let stateful = stage.instance.is_stateful() && lane.is_some();
        if records.is_empty() && !stateful {
            continue;
        }
        if let Some(took) = stage.refresh() {
            tracing::debug!(pipeline = %stage.slot.pipeline, slot = stage.slot.index, sha256 = %stage.version.plugin.compiled.sha256, cutover_us = took.as_micros() as u64, "cut over");
        }
        let mut call = match (&mut lane, stateful) {
            (Some(lane), true) => lane.calls.get_mut(index),
            _ => None,
        };
        if let Some(c) = call.as_deref_mut() {
            c.now_ms = crate::state::now_ms();
        }
        let start = call.as_ref().map(|c| c.state.savepoint());
        let newest = records.iter().filter_map(|r| r.timestamp_ms).max();
        let started = std::time::Instant::now();
        let result = loop {
            let mut result = StageResult::default();
            let stop_at_first = policy == ErrorPolicy::Fail;
            isolate(
                &mut stage.instance,
                &records,
                0,
                stop_at_first,
                &mut result,
                call.as_deref_mut(),
            )?;
            let seen = match result.failures.first() {
                Some((i, _)) if result.stopped => *i + 1,
                _ => records.len(),
            };
            stage
                .slot
                .observe(&stage.version, seen as u64, result.failures.len() as u64);
            if stage.version.rolled_back()
                && stage.refresh().is_some()
                && !stage.version.rolled_back()
            {
                // Its outputs (and state changes) are dropped: the restored version processes
                // the batch instead, so each record's outputs come from exactly one version.
                if let (Some(c), Some(start)) = (call.as_deref_mut(), start) {
                    c.state.undo_to(start);
                }
                continue;
            }
            break result;
        };
        if let Some(shadow) = stage.slot.shadow().filter(|s| s.takes_batch()) {
            offer_to_shadow(&shadow, &records, &result, started.elapsed());
        }
        let plugin = &stage.version.plugin;
        let who = Some((plugin.name.clone(), plugin.compiled.sha256.clone()));
        inputs = result.made_from.iter().map(|&i| inputs[i]).collect();
        let stage = &mut stage.instance;
        let mut stage_failures: Vec<Failure> = result
            .failures
            .into_iter()
            .map(|(i, message)| Failure {
                position: records[i].position(),
                message,
                plugin: who.clone(),
                value: Some(records[i].value.clone()),
            })
            .collect();
        records = result.outputs;
        let unknown = |r: &Record| {
            r.output
                .as_deref()
                .is_some_and(|name| !outputs.iter().any(|o| &**o == name))
        };
        if let Some(first) = records.iter().position(unknown) {
            let plugin = stage.plugin().name.clone();
            let misrouted = |r: &Record| {
                let name = r.output.as_deref().unwrap_or_default();
                Failure {
                    position: r.position(),
                    message: format!(
                        "plugin {plugin} routed it to output `{name}`, which this pipeline does \
                         not have: add --output {name}=URI (or `{name} = \"URI\"` under the \
                         pipeline's outputs in a pipelines file)"
                    ),
                    plugin: who.clone(),
                    value: Some(r.value.clone()),
                }
            };
            if policy == ErrorPolicy::Fail {
                // It comes before any failure the stage reported: stop there, before every
                // output of its input (the ones before it in the list included).
                stage_failures = vec![misrouted(&records[first])];
                let cut = inputs.partition_point(|&i| i < inputs[first]);
                records.truncate(cut);
                inputs.truncate(cut);
            } else {
                let ((bad, _), kept) = split_off_where(records, inputs, unknown);
                stage_failures.extend(bad.iter().map(misrouted));
                (records, inputs) = kept;
            }
        }
        if records.iter().any(|r| r.output.is_some()) {
            let ((out, out_inputs), kept) =
                split_off_where(records, inputs, |r| r.output.is_some());
            routed.extend(out);
            routed_inputs.extend(out_inputs);
            (records, inputs) = kept;
        }
        failures.extend(stage_failures);
        if let (Some(c), Some(info)) = (call, &info) {
            if let Some(t) = newest {
                c.observe(t);
            }
            if ending {
                c.observe(i64::MAX); // the lane is over: every window of it closes
            }
            c.state.keep();
            let (fired, fired_failures) = fire_timers(stage, c, info)?;
            failures.extend(fired_failures);
            let next = first_timer_input + inputs.len();
            inputs.extend(next..next + fired.len());
            records.extend(fired);
        }
    }
    records.append(&mut routed);
    inputs.append(&mut routed_inputs);
    Ok(Chained {
        records,
        inputs,
        failures,
    })
}

/// What a batch became: the outputs (for the main sink first, then those routed to named
/// outputs), for each the index of the input it was made from, and the records that failed.
pub(crate) struct Chained {
    pub records: Vec<Record>,
    /// Ascending within the main sink's records and within the routed ones.
    pub inputs: Vec<usize>,
    pub failures: Vec<Failure>,
}

type WithInputs = (Vec<Record>, Vec<usize>);

/// Splits the records (with their input indices) into those `take` says yes to and the rest,
/// each in order.
fn split_off_where(
    records: Vec<Record>,
    inputs: Vec<usize>,
    take: impl Fn(&Record) -> bool,
) -> (WithInputs, WithInputs) {
    let (mut taken, mut kept): (WithInputs, WithInputs) = Default::default();
    for (r, i) in records.into_iter().zip(inputs) {
        let to = if take(&r) { &mut taken } else { &mut kept };
        to.0.push(r);
        to.1.push(i);
    }
    (taken, kept)
}

#[derive(Default)]
struct StageResult {
    outputs: Vec<Record>,
    /// For each output, the index of the stage's input it was made from.
    made_from: Vec<usize>,
    /// (input index, error)
    failures: Vec<(usize, String)>,
    stopped: bool,
}

/// What each input the stage processed became, for the slot's shadow run to compare with.
fn offer_to_shadow(
    shadow: &Shadow,
    inputs: &[Record],
    result: &StageResult,
    took: std::time::Duration,
) {
    let processed = match result.failures.first() {
        Some((i, _)) if result.stopped => *i + 1,
        _ => inputs.len(),
    };
    let mut live: Vec<Outcome> = vec![Ok(Vec::new()); processed];
    for (output, &from) in result.outputs.iter().zip(&result.made_from) {
        if let Some(Ok(outputs)) = live.get_mut(from) {
            outputs.push(output.clone());
        }
    }
    for (i, message) in &result.failures {
        if let Some(outcome) = live.get_mut(*i) {
            *outcome = Err(message.clone());
        }
    }
    shadow.offer(inputs[..processed].to_vec(), live, took);
}

/// Processes `records` (which start at input index `base`); a batch that fails as a whole is
/// split in halves until the records that cause it stand alone, so one poison record never
/// takes its neighbours with it.
fn isolate(
    stage: &mut TransformInstance,
    records: &[Record],
    base: usize,
    stop_at_first: bool,
    out: &mut StageResult,
    mut lane: Option<&mut LaneCall>,
) -> Result<()> {
    if out.stopped || records.is_empty() {
        return Ok(());
    }
    let savepoint = lane.as_ref().map(|l| l.state.savepoint());
    match stage.process(records, lane.as_deref_mut()) {
        Ok(processed) => {
            let mut outputs = processed.outputs.into_iter();
            for (i, outcome) in processed.outcomes.into_iter().enumerate() {
                match outcome {
                    Ok(n) => {
                        out.outputs.extend(outputs.by_ref().take(n as usize));
                        out.made_from.resize(out.outputs.len(), base + i);
                    }
                    Err(message) => {
                        out.failures.push((
                            base + i,
                            format!("plugin {}: {message}", stage.plugin().name),
                        ));
                        if stop_at_first {
                            out.stopped = true;
                            return Ok(());
                        }
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            // Whatever the failed call changed in the lane's state goes with it.
            if let (Some(l), Some(at)) = (lane.as_deref_mut(), savepoint) {
                l.state.undo_to(at);
            }
            match e {
                e @ BatchError::Restart { .. } => Err(e.into()),
                e if records.len() == 1 => {
                    out.failures.push((base, e.to_string()));
                    out.stopped = stop_at_first;
                    Ok(())
                }
                e => {
                    tracing::debug!(
                        records = records.len(),
                        "batch failed ({e}); splitting it to isolate the bad records"
                    );
                    let mid = records.len() / 2;
                    isolate(
                        stage,
                        &records[..mid],
                        base,
                        stop_at_first,
                        out,
                        lane.as_deref_mut(),
                    )?;
                    isolate(stage, &records[mid..], base + mid, stop_at_first, out, lane)
                }
            }
        }
    }
}

/// Fires the lane's due timers through the stage. Each timer's outputs are positioned in the
/// lane's timer positions (the count of timers fired before it), so a replay after a restore
/// gives them the same positions.
fn fire_timers(
    stage: &mut TransformInstance,
    call: &mut LaneCall,
    lane: &LaneInfo,
) -> Result<(Vec<Record>, Vec<Failure>)> {
    let (mut outputs, mut failures) = (Vec::new(), Vec::new());
    let plugin = stage.plugin().name.clone();
    for (seq, fired) in stage.fire_due(call, TIMERS_PER_CALL)? {
        let origin = lane.timer_origin(seq);
        match fired {
            Ok(made) => outputs.extend(made.into_iter().map(|mut r| {
                r.origin = Some(origin.clone());
                r
            })),
            Err(message) => failures.push(Failure {
                position: origin.to_string(),
                message: format!("plugin {plugin}, timer: {message}"),
                plugin: None,
                value: None,
            }),
        }
    }
    Ok((outputs, failures))
}
