//! Running one case through the plugin and comparing outcome by outcome.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use crate::plugin::{Plugin, SourceInstance, TransformInstance, World};
use crate::record::Record;
use crate::state::LaneCall;

use super::cases::*;
use super::diff::*;
use super::{Case, CaseReport, TestArgs};

pub(super) fn transform_case(
    plugin: &Arc<Plugin>,
    case: &Case,
    args: &TestArgs,
) -> Result<CaseReport> {
    let Some(input) = &case.input else {
        bail!(
            "case {}: {} is a transform plugin: it needs {}.input.jsonl beside {}",
            case.name,
            plugin.name,
            case.name,
            case.expected.display()
        );
    };
    let inputs = read_lines(input)?;
    let advances: Vec<Option<i64>> = inputs.iter().map(advance_of).collect();
    let records = inputs
        .iter()
        .zip(&advances)
        .map(|(line, advance)| match advance {
            Some(_) => Ok(Record::default()),
            None => input_record(line),
        })
        .collect::<Result<Vec<_>>>()?;
    let results = if plugin.world == World::Stateful {
        run_stateful(plugin, &records, &advances, args.now_ms)?
    } else {
        if let Some((line, _)) = inputs.iter().zip(&advances).find(|(_, a)| a.is_some()) {
            bail!(
                "{}: `$advance_ms` moves time for the timers of a stateful plugin; {} is stateless",
                line.at,
                plugin.name
            );
        }
        run_transform(plugin, &records)?
    };
    if args.bless {
        let lines = records
            .iter()
            .zip(&results)
            .map(|(input, result)| bless_outcome(input, result))
            .collect::<Vec<_>>();
        write_lines(&case.expected, &lines)?;
        return Ok(CaseReport {
            records: records.len(),
            failures: Vec::new(),
        });
    }
    let expected = read_lines(&case.expected)?;
    if expected.len() != inputs.len() {
        bail!(
            "case {}: {} has {} line(s) for {} input line(s); give one expected line per input (`{{\"$outputs\": []}}` for a record that is filtered out)",
            case.name,
            case.expected.display(),
            expected.len(),
            inputs.len()
        );
    }
    let mut failures = Vec::new();
    for ((line, want), got) in inputs.iter().zip(&expected).zip(&results) {
        let mut diff = Vec::new();
        match (expected_outcome(want)?, got) {
            (Outcome::Error(text), Err(error)) => {
                if !error.contains(&text) {
                    diff.push(format!(
                        "error: expected one containing {text:?}, got {error:?}"
                    ));
                }
            }
            (Outcome::Error(text), Ok(outputs)) => diff.push(format!(
                "expected an error containing {text:?}, got {} output(s){}",
                outputs.len(),
                outputs
                    .first()
                    .map_or_else(String::new, |o| format!(", the first: {}", shown(&o.value)))
            )),
            (Outcome::Outputs(_), Err(error)) => {
                diff.push(format!("expected output(s), got the error {error:?}"));
            }
            (Outcome::Outputs(want), Ok(outputs)) => {
                if want.len() != outputs.len() {
                    diff.push(format!(
                        "expected {} output(s), got {}",
                        want.len(),
                        outputs.len()
                    ));
                }
                for (i, (w, g)) in want.iter().zip(outputs).enumerate() {
                    let prefix = if want.len() > 1 {
                        format!("output {}: ", i + 1)
                    } else {
                        String::new()
                    };
                    compare(w, g, &prefix, &mut diff);
                }
            }
        }
        if !diff.is_empty() {
            failures.push(render_failure(&line.at, &want.at, &diff));
        }
    }
    Ok(CaseReport {
        records: records.len(),
        failures,
    })
}

/// Each input's outcome. Batches of 64 as the runtime sends them; a batch that fails as a whole
/// (a trap, say) is run again record by record so the failure lands on the record that caused it.
pub(super) fn run_transform(
    plugin: &Arc<Plugin>,
    records: &[Record],
) -> Result<Vec<Result<Vec<Record>, String>>> {
    let mut instance = TransformInstance::new(plugin.clone())?;
    let mut results = Vec::with_capacity(records.len());
    for chunk in records.chunks(64) {
        match instance.process(chunk, None) {
            Ok(processed) => {
                let mut outputs = processed.outputs.into_iter();
                for outcome in processed.outcomes {
                    results.push(outcome.map(|n| outputs.by_ref().take(n as usize).collect()));
                }
            }
            Err(_) => {
                for record in chunk {
                    results.push(match instance.process(std::slice::from_ref(record), None) {
                        Ok(p) => match p.outcomes.into_iter().next() {
                            Some(Ok(_)) => Ok(p.outputs),
                            Some(Err(e)) => Err(e),
                            None => Err("no outcome".to_owned()),
                        },
                        Err(e) => Err(e.to_string()),
                    });
                }
            }
        }
    }
    Ok(results)
}

/// A line `{"$advance_ms": N}` of a stateful plugin's case: processing time moves on by N ms
/// (its timers due fire; their outputs are the line's expected outputs).
fn advance_of(line: &Line) -> Option<i64> {
    let map = line.json.as_ref()?.as_object()?;
    (map.len() == 1).then_some(())?;
    map.get("$advance_ms")?.as_i64()
}

/// Each line's outcome for a stateful plugin: one record at a time on one lane (state kept
/// across the case), then the timers due fire, their outputs counted with the line. Time
/// starts at `now_ms` and moves on at `$advance_ms` lines; event time moves with records'
/// timestamps and what the plugin observes.
fn run_stateful(
    plugin: &Arc<Plugin>,
    records: &[Record],
    advances: &[Option<i64>],
    now_ms: i64,
) -> Result<Vec<Result<Vec<Record>, String>>> {
    let mut instance = TransformInstance::new(plugin.clone())?;
    let mut lane = LaneCall {
        limit: usize::MAX,
        now_ms,
        ..Default::default()
    };
    let mut results = Vec::with_capacity(records.len());
    for (record, advance) in records.iter().zip(advances) {
        let mut result = match advance {
            Some(ms) => {
                lane.now_ms = lane.now_ms.saturating_add(*ms);
                Ok(Vec::new())
            }
            None => {
                let savepoint = lane.state.savepoint();
                match instance.process(std::slice::from_ref(record), Some(&mut lane)) {
                    Ok(p) => {
                        if let Some(ts) = record.timestamp_ms {
                            lane.observe(ts);
                        }
                        lane.state.keep();
                        match p.outcomes.into_iter().next() {
                            Some(Ok(_)) => Ok(p.outputs),
                            Some(Err(e)) => Err(e),
                            None => Err("no outcome".to_owned()),
                        }
                    }
                    Err(e) => {
                        lane.state.undo_to(savepoint);
                        Err(e.to_string())
                    }
                }
            }
        };
        for (_, fired) in instance.fire_due(&mut lane, 256)? {
            match (&mut result, fired) {
                (Ok(outputs), Ok(made)) => outputs.extend(made),
                (Ok(_), Err(e)) => result = Err(format!("timer: {e}")),
                (Err(_), _) => {}
            }
        }
        results.push(result);
    }
    Ok(results)
}

pub(super) fn source_case(
    plugin: &Arc<Plugin>,
    case: &Case,
    args: &TestArgs,
) -> Result<CaseReport> {
    if case.input.is_some() {
        bail!(
            "case {}: {} is a source plugin: it takes no input; remove {}.input.jsonl and keep only the expected records",
            case.name,
            plugin.name,
            case.name
        );
    }
    let expected = if args.bless && !case.expected.exists() {
        Vec::new()
    } else {
        read_lines(&case.expected)?
    };
    let want = if args.bless && expected.is_empty() {
        args.count
    } else {
        expected.len()
    };
    let mut instance = SourceInstance::new(plugin.clone())?;
    let mut records = Vec::with_capacity(want);
    let mut now_ms = args.now_ms;
    let mut idle = 0;
    while records.len() < want {
        let max = (want - records.len()).min(256) as u32;
        let batch = instance
            .next(max, now_ms)
            .map_err(|e| anyhow!("case {}: {e}", case.name))?;
        if batch.is_empty() {
            idle += 1;
            if idle > 10_000 {
                bail!(
                    "case {}: the source produced {} of the {want} expected record(s) and then nothing for 10 000 simulated seconds",
                    case.name,
                    records.len()
                );
            }
            now_ms += 1000;
        }
        records.extend(batch);
    }
    if args.bless {
        let lines = records
            .iter()
            .map(|r| bless_envelope(r, true))
            .collect::<Vec<_>>();
        write_lines(&case.expected, &lines)?;
        return Ok(CaseReport {
            records: records.len(),
            failures: Vec::new(),
        });
    }
    let mut failures = Vec::new();
    for (i, (want, got)) in expected.iter().zip(&records).enumerate() {
        let env = want
            .json
            .as_ref()
            .ok_or_else(|| anyhow!("{}: not JSON", want.at))
            .and_then(|v| envelope(v, &want.at))?;
        let mut diff = Vec::new();
        compare(&env, got, "", &mut diff);
        if !diff.is_empty() {
            failures.push(render_failure(
                &format!("record {}", i + 1),
                &want.at,
                &diff,
            ));
        }
    }
    Ok(CaseReport {
        records: records.len(),
        failures,
    })
}
