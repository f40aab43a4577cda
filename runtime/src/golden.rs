//! `runtime test`: runs a plugin on golden cases and compares what it returns with what is
//! expected, record by record, JSON-aware, with a readable diff of the first differences.
//!
//! A case is a pair of JSON-lines files, `NAME.input.jsonl` and `NAME.expected.jsonl` (a source
//! plugin's case has only the expected file). Input lines are record values, verbatim, or an
//! envelope `{"$value": JSON | "$text": "raw", "$key": "k", "$headers": {"h": "v"},
//! "$timestamp_ms": N}`. Each expected line answers the input line at the same place:
//! - a JSON value: exactly one output, with that value;
//! - an envelope as above: one output; the fields it gives are checked (`"$key": null` = no key);
//! - `{"$outputs": [..]}`: that many outputs (each a value or an envelope), `[]` = filtered out;
//! - `{"$error": "text"}`: the record fails with an error containing `text`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::plugin::{
    ArtifactCache, Capabilities, Limits, Plugin, PluginEngine, SourceInstance, TransformInstance,
    World,
};
use crate::record::Record;

/// `runtime test` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct TestArgs {
    /// The plugin under test (.wasm component).
    #[arg(long, value_name = "FILE")]
    pub plugin: PathBuf,
    /// Input records, one per line (a transform plugin's case).
    #[arg(
        long,
        value_name = "FILE",
        requires = "expect",
        conflicts_with = "cases"
    )]
    pub input: Option<PathBuf>,
    /// Expected outcomes, one line per input line (or per record, for a source plugin).
    #[arg(long, value_name = "FILE", conflicts_with = "cases")]
    pub expect: Option<PathBuf>,
    /// A directory of cases: NAME.input.jsonl + NAME.expected.jsonl pairs (for a source plugin,
    /// NAME.expected.jsonl alone).
    #[arg(long, value_name = "DIR", required_unless_present = "expect")]
    pub cases: Option<PathBuf>,
    /// A `key=value` pair handed to the plugin's `init` (e.g. `seed=7` for the mock source).
    /// Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = crate::config::parse_key_value)]
    pub settings: Vec<(String, String)>,
    /// The clock a source plugin sees, in ms since the Unix epoch; it advances 1 s each time
    /// the source has nothing due.
    #[arg(long, default_value_t = 1_700_000_000_000)]
    pub now_ms: i64,
    /// Write the plugin's current outcomes as the expected files instead of comparing (review
    /// the diff before committing it).
    #[arg(long)]
    pub bless: bool,
    /// With --bless, how many records a source case records when it has no expected file yet.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// How many differing records to show per case.
    #[arg(long, default_value_t = 5)]
    pub show: usize,
    #[arg(long, env = "SLUICE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// What a run of cases found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub cases: usize,
    pub records: usize,
    pub failed: usize,
}

struct Case {
    name: String,
    input: Option<PathBuf>,
    expected: PathBuf,
    settings: Option<PathBuf>,
}

/// Runs the cases; writes the report to `out`. Mismatches are counted in the summary; an `Err`
/// means the cases could not be run at all (a missing file, a malformed line, a plugin that does
/// not load).
pub fn run(args: &TestArgs, out: &mut dyn std::io::Write) -> Result<Summary> {
    let cases = discover(args)?;
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(ArtifactCache::default_dir);
    let engine = Arc::new(PluginEngine::new(cache_dir)?);
    // No capabilities: the clock is frozen and randomness is zeros, so every run is the same.
    let limits = Limits {
        capabilities: Some(Capabilities::default()),
        ..Limits::default()
    };
    let plugin = engine.load(&args.plugin, args.settings.clone(), limits)?;
    writeln!(
        out,
        "testing {} ({} world), {} case(s)",
        args.plugin.display(),
        plugin.world,
        cases.len()
    )?;
    let mut summary = Summary::default();
    for case in &cases {
        let plugin = match &case.settings {
            None => plugin.clone(),
            Some(path) => {
                let mut settings = args.settings.clone();
                settings.extend(read_settings(path)?);
                engine
                    .load(&args.plugin, settings, limits)
                    .with_context(|| format!("case {} with {}", case.name, path.display()))?
            }
        };
        let report = match plugin.world {
            World::Transform => transform_case(&plugin, case, args)?,
            World::Source => source_case(&plugin, case, args)?,
        };
        summary.cases += 1;
        summary.records += report.records;
        summary.failed += report.failures.len();
        if args.bless {
            writeln!(
                out,
                "  {}: {} record(s) written to {}",
                case.name,
                report.records,
                case.expected.display()
            )?;
            continue;
        }
        if report.failures.is_empty() {
            writeln!(out, "  {}: {} record(s) ok", case.name, report.records)?;
            continue;
        }
        writeln!(
            out,
            "  {}: FAILED, {} of {} record(s) differ",
            case.name,
            report.failures.len(),
            report.records
        )?;
        for failure in report.failures.iter().take(args.show) {
            write!(out, "{failure}")?;
        }
        if report.failures.len() > args.show {
            writeln!(
                out,
                "    ... and {} more (--show N shows more)",
                report.failures.len() - args.show
            )?;
        }
    }
    let verdict = if summary.failed == 0 { "ok" } else { "FAILED" };
    writeln!(
        out,
        "{verdict}: {} case(s), {} record(s), {} differ",
        summary.cases, summary.records, summary.failed
    )?;
    Ok(summary)
}

fn discover(args: &TestArgs) -> Result<Vec<Case>> {
    if let Some(expected) = &args.expect {
        let name = expected
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        return Ok(vec![Case {
            name,
            input: args.input.clone(),
            expected: expected.clone(),
            settings: None,
        }]);
    }
    let dir = args
        .cases
        .as_ref()
        .expect("clap requires --cases or --expect");
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the cases directory {}", dir.display()))?;
    let mut names = std::collections::BTreeSet::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(case) = name
            .strip_suffix(".input.jsonl")
            .or_else(|| name.strip_suffix(".expected.jsonl"))
            .or_else(|| name.strip_suffix(".settings"))
        {
            names.insert(case.to_owned());
        }
    }
    if names.is_empty() {
        bail!(
            "{} has no cases: add NAME.input.jsonl with NAME.expected.jsonl (a source plugin needs only NAME.expected.jsonl)",
            dir.display()
        );
    }
    Ok(names
        .into_iter()
        .map(|name| {
            let input = dir.join(format!("{name}.input.jsonl"));
            let settings = dir.join(format!("{name}.settings"));
            Case {
                input: input.exists().then_some(input),
                settings: settings.exists().then_some(settings),
                expected: dir.join(format!("{name}.expected.jsonl")),
                name,
            }
        })
        .collect())
}

/// `key=value` lines; blank lines and `#` comments are skipped.
fn read_settings(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| {
                    anyhow!(
                        "{}:{}: `{l}` is not a `key=value` line",
                        path.display(),
                        i + 1
                    )
                })
        })
        .collect()
}

struct CaseReport {
    records: usize,
    failures: Vec<String>,
}

/// One line of a case file, with where it is.
struct Line {
    at: String,
    json: Option<Value>,
    text: String,
}

fn read_lines(path: &Path) -> Result<Vec<Line>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the case file {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Line {
            at: format!("{name}:{}", i + 1),
            json: serde_json::from_str(l).ok(),
            text: l.to_owned(),
        })
        .collect())
}

/// An expected (or given) message: the value and, when given, key, headers and timestamp.
#[derive(Debug, Clone, PartialEq)]
struct Envelope {
    value: Expected,
    key: Option<Option<String>>,
    headers: Option<Vec<(String, String)>>,
    timestamp_ms: Option<Option<i64>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Json(Value),
    Text(String),
}

const ENVELOPE_FIELDS: [&str; 5] = ["$value", "$text", "$key", "$headers", "$timestamp_ms"];

fn is_envelope(map: &Map<String, Value>) -> bool {
    (map.contains_key("$value") || map.contains_key("$text"))
        && map.keys().all(|k| ENVELOPE_FIELDS.contains(&k.as_str()))
}

fn envelope(v: &Value, at: &str) -> Result<Envelope> {
    let Some(map) = v.as_object().filter(|m| is_envelope(m)) else {
        return Ok(Envelope {
            value: Expected::Json(v.clone()),
            key: None,
            headers: None,
            timestamp_ms: None,
        });
    };
    let value = match (map.get("$value"), map.get("$text")) {
        (Some(v), None) => Expected::Json(v.clone()),
        (None, Some(Value::String(t))) => Expected::Text(t.clone()),
        _ => bail!("{at}: give either `$value` (JSON) or `$text` (a string), not both"),
    };
    let key = match map.get("$key") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(k)) => Some(Some(k.clone())),
        Some(other) => bail!("{at}: `$key` must be a string or null, not {other}"),
    };
    let headers = match map.get("$headers") {
        None => None,
        Some(Value::Object(h)) => Some(
            h.iter()
                .map(|(n, v)| match v {
                    Value::String(s) => Ok((n.clone(), s.clone())),
                    other => Err(anyhow!("{at}: header `{n}` must be a string, not {other}")),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(other) => bail!("{at}: `$headers` must be an object of strings, not {other}"),
    };
    let timestamp_ms = match map.get("$timestamp_ms") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(v.as_i64().ok_or_else(|| {
            anyhow!("{at}: `$timestamp_ms` must be an integer or null, not {v}")
        })?)),
    };
    Ok(Envelope {
        value,
        key,
        headers,
        timestamp_ms,
    })
}

fn input_record(line: &Line) -> Result<Record> {
    let env = match &line.json {
        Some(v @ Value::Object(m)) if is_envelope(m) => envelope(v, &line.at)?,
        _ => {
            // Not an envelope: the line is the value, byte for byte.
            let mut r = Record::new(Bytes::from(line.text.clone()));
            r.origin = Some(line.at.as_str().into());
            return Ok(r);
        }
    };
    let value = match env.value {
        Expected::Json(v) => serde_json::to_vec(&v)?,
        Expected::Text(t) => t.into_bytes(),
    };
    let mut r = Record::new(Bytes::from(value));
    r.key = env.key.flatten().map(Bytes::from);
    r.headers = env
        .headers
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (n, Bytes::from(v)))
        .collect();
    r.timestamp_ms = env.timestamp_ms.flatten();
    r.origin = Some(line.at.as_str().into());
    Ok(r)
}

/// What one input is expected to become.
enum Outcome {
    Outputs(Vec<Envelope>),
    Error(String),
}

fn expected_outcome(line: &Line) -> Result<Outcome> {
    let Some(v) = &line.json else {
        bail!(
            "{}: not JSON; an expected line is a JSON value, an envelope, {{\"$outputs\": [..]}} or {{\"$error\": \"text\"}} (non-JSON output: {{\"$text\": \"..\"}})",
            line.at
        );
    };
    if let Some(map) = v.as_object().filter(|m| m.len() == 1) {
        if let Some(e) = map.get("$error") {
            let text = e
                .as_str()
                .ok_or_else(|| anyhow!("{}: `$error` must be a string", line.at))?;
            return Ok(Outcome::Error(text.to_owned()));
        }
        if let Some(outputs) = map.get("$outputs") {
            let list = outputs
                .as_array()
                .ok_or_else(|| anyhow!("{}: `$outputs` must be a list", line.at))?;
            return Ok(Outcome::Outputs(
                list.iter()
                    .map(|o| envelope(o, &line.at))
                    .collect::<Result<_>>()?,
            ));
        }
    }
    Ok(Outcome::Outputs(vec![envelope(v, &line.at)?]))
}

fn transform_case(plugin: &Arc<Plugin>, case: &Case, args: &TestArgs) -> Result<CaseReport> {
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
    let records = inputs
        .iter()
        .map(input_record)
        .collect::<Result<Vec<_>>>()?;
    let results = run_transform(plugin, &records)?;
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
fn run_transform(
    plugin: &Arc<Plugin>,
    records: &[Record],
) -> Result<Vec<Result<Vec<Record>, String>>> {
    let mut instance = TransformInstance::new(plugin.clone())?;
    let mut results = Vec::with_capacity(records.len());
    for chunk in records.chunks(64) {
        match instance.process(chunk) {
            Ok(processed) => {
                let mut outputs = processed.outputs.into_iter();
                for outcome in processed.outcomes {
                    results.push(outcome.map(|n| outputs.by_ref().take(n as usize).collect()));
                }
            }
            Err(_) => {
                for record in chunk {
                    results.push(match instance.process(std::slice::from_ref(record)) {
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

fn source_case(plugin: &Arc<Plugin>, case: &Case, args: &TestArgs) -> Result<CaseReport> {
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

fn render_failure(input: &str, expected: &str, diff: &[String]) -> String {
    let mut s = format!("    {input} (expected at {expected}):\n");
    for d in diff {
        let _ = writeln!(s, "      {d}");
    }
    s
}

/// Compares one output with what was expected, adding a line per difference.
fn compare(want: &Envelope, got: &Record, prefix: &str, diff: &mut Vec<String>) {
    match &want.value {
        Expected::Json(w) => match serde_json::from_slice::<Value>(&got.value) {
            Ok(g) => json_diff(&format!("{prefix}$"), w, &g, diff),
            Err(_) => diff.push(format!(
                "{prefix}value: expected JSON {w}, got non-JSON {}",
                shown(&got.value)
            )),
        },
        Expected::Text(w) => {
            if w.as_bytes() != &got.value[..] {
                diff.push(format!(
                    "{prefix}value: expected {w:?}, got {}",
                    shown(&got.value)
                ));
            }
        }
    }
    if let Some(key) = &want.key {
        let got_key = got
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        if *key != got_key {
            diff.push(format!("{prefix}key: expected {key:?}, got {got_key:?}"));
        }
    }
    if let Some(headers) = &want.headers {
        let mut w: Vec<(String, String)> = headers.clone();
        let mut g: Vec<(String, String)> = got
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        w.sort();
        g.sort();
        if w != g {
            diff.push(format!("{prefix}headers: expected {w:?}, got {g:?}"));
        }
    }
    if let Some(ts) = &want.timestamp_ms {
        if *ts != got.timestamp_ms {
            diff.push(format!(
                "{prefix}timestamp_ms: expected {ts:?}, got {:?}",
                got.timestamp_ms
            ));
        }
    }
}

/// At most this many lines of JSON differences per record.
const MAX_DIFF_LINES: usize = 8;

/// Walks two JSON values; numbers are equal when their values are (39 == 39.0); object key
/// order does not matter.
fn json_diff(path: &str, want: &Value, got: &Value, diff: &mut Vec<String>) {
    if diff.len() >= MAX_DIFF_LINES {
        return;
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => json_diff(&p, wv, gv, diff),
                    None => diff.push(format!("{p}: expected {wv}, missing")),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) && diff.len() < MAX_DIFF_LINES {
                    diff.push(format!("{path}.{k}: not expected, got {gv}"));
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                diff.push(format!(
                    "{path}: expected {} element(s), got {}",
                    w.len(),
                    g.len()
                ));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                json_diff(&format!("{path}[{i}]"), wv, gv, diff);
            }
        }
        (Value::Number(w), Value::Number(g)) => {
            let same = match (w.as_i64(), g.as_i64()) {
                (Some(a), Some(b)) => a == b,
                _ => w.as_f64() == g.as_f64(),
            };
            if !same {
                diff.push(format!("{path}: expected {w}, got {g}"));
            }
        }
        (w, g) if w == g => {}
        (w, g) => diff.push(format!("{path}: expected {w}, got {g}")),
    }
}

/// A value for a message: JSON as it is, anything else quoted, long ones cut.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let cut: String = text.chars().take(200).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(_) => format!("{cut}{more}"),
        Err(_) => format!("{cut:?}{more}"),
    }
}

fn bless_value(bytes: &[u8]) -> (&'static str, Value) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => ("$value", v),
        Err(_) => (
            "$text",
            Value::String(String::from_utf8_lossy(bytes).into_owned()),
        ),
    }
}

fn bless_envelope(r: &Record, full: bool) -> Value {
    let (field, value) = bless_value(&r.value);
    if !full && field == "$value" && !is_envelope_like(&value) {
        return value;
    }
    let mut m = Map::new();
    m.insert(field.to_owned(), value);
    if full {
        m.insert(
            "$key".to_owned(),
            r.key
                .as_ref()
                .map_or(Value::Null, |k| String::from_utf8_lossy(k).into()),
        );
        m.insert(
            "$headers".to_owned(),
            r.headers
                .iter()
                .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into()))
                .collect::<Map<_, _>>()
                .into(),
        );
        m.insert(
            "$timestamp_ms".to_owned(),
            r.timestamp_ms.map_or(Value::Null, Value::from),
        );
    }
    Value::Object(m)
}

/// A plain value that would read as an envelope or outcome must itself be wrapped.
fn is_envelope_like(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.keys().any(|k| k.starts_with('$')))
}

fn bless_outcome(input: &Record, result: &Result<Vec<Record>, String>) -> Value {
    match result {
        Err(e) => serde_json::json!({ "$error": e }),
        Ok(outputs) => {
            let same_meta = |o: &Record| {
                o.key == input.key
                    && o.headers == input.headers
                    && o.timestamp_ms == input.timestamp_ms
            };
            match outputs.as_slice() {
                [one] => bless_envelope(one, !same_meta(one)),
                many => serde_json::json!({
                    "$outputs": many.iter().map(|o| bless_envelope(o, !same_meta(o))).collect::<Vec<_>>()
                }),
            }
        }
    }
}

fn write_lines(path: &Path, lines: &[Value]) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(w: Value, g: Value) -> Vec<String> {
        let mut d = Vec::new();
        json_diff("$", &w, &g, &mut d);
        d
    }

    #[test]
    fn numbers_compare_by_value_and_key_order_is_free() {
        assert!(diff(
            json!({"a": 39.0, "b": [1, 2]}),
            json!({"b": [1.0, 2], "a": 39})
        )
        .is_empty());
        assert_eq!(
            diff(json!({"a": 1}), json!({"a": 2})),
            ["$.a: expected 1, got 2"]
        );
    }

    #[test]
    fn differences_name_their_path() {
        let d = diff(
            json!({"x": {"y": "accepted", "gone": 1}, "l": [1]}),
            json!({"x": {"y": "rejected", "new": true}, "l": [1, 2]}),
        );
        assert_eq!(
            d,
            [
                "$.l: expected 1 element(s), got 2",
                "$.x.gone: expected 1, missing",
                "$.x.y: expected \"accepted\", got \"rejected\"",
                "$.x.new: not expected, got true",
            ]
        );
    }

    #[test]
    fn envelopes_and_plain_values() {
        let env = envelope(&json!({"$value": {"a": 1}, "$key": null}), "f:1").unwrap();
        assert_eq!(env.key, Some(None));
        assert_eq!(env.value, Expected::Json(json!({"a": 1})));
        // An object with other fields too is a plain value.
        let plain = envelope(&json!({"$value": 1, "other": 2}), "f:1").unwrap();
        assert_eq!(
            plain.value,
            Expected::Json(json!({"$value": 1, "other": 2}))
        );
        let err = envelope(&json!({"$value": 1, "$key": 5}), "f:3").unwrap_err();
        assert!(
            err.to_string().contains("f:3: `$key` must be a string"),
            "{err}"
        );
    }
}
