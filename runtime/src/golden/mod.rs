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

mod cases;
mod diff;
mod runner;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use crate::plugin::{ArtifactCache, Capabilities, Limits, PluginEngine, World};

use runner::{source_case, transform_case};

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

pub(super) struct Case {
    pub(super) name: String,
    pub(super) input: Option<PathBuf>,
    pub(super) expected: PathBuf,
    pub(super) settings: Option<PathBuf>,
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
            World::Transform | World::Stateful => transform_case(&plugin, case, args)?,
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

pub(super) struct CaseReport {
    pub(super) records: usize,
    pub(super) failures: Vec<String>,
}
