//! Pipelines files (TOML): named endpoints, and a `[[pipeline]]` table per pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::args::RunArgs;
use super::limits;
use super::spec::{PipelineSpec, PluginOverrides, StatefulOptions};
use crate::failure::ErrorPolicy;
use crate::plugin::Capabilities;

/// The pipelines file. Relative paths (plugins, `file://` directories, state files) are
/// relative to the file's directory, so it runs from anywhere.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelinesFile {
    /// Named endpoint URIs, the part that changes between embedded defaults and real services.
    #[serde(default)]
    endpoints: BTreeMap<String, String>,
    #[serde(rename = "pipeline", default)]
    pipelines: Vec<PipelineEntry>,
}

/// A plugin in a pipelines file: a path, or a table with its own limits and settings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PluginEntry {
    Path(PathBuf),
    Table(PluginTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginTable {
    path: PathBuf,
    #[serde(default)]
    settings: BTreeMap<String, toml::Value>,
    memory_limit_mib: Option<u32>,
    batch_deadline_ms: Option<u64>,
    fuel: Option<u64>,
    capabilities: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineEntry {
    name: String,
    #[serde(default)]
    plugins: Vec<PluginEntry>,
    source: Option<String>,
    sink: String,
    /// Named outputs: NAME = URI or a name under [endpoints].
    #[serde(default)]
    outputs: BTreeMap<String, String>,
    /// Handed to every plugin's `init`.
    #[serde(default)]
    settings: BTreeMap<String, toml::Value>,
    rate: Option<f64>,
    count: Option<u64>,
    batch_size: Option<u32>,
    on_error: Option<ErrorPolicy>,
    /// Dead-letter endpoint (a URI or a name under [endpoints]).
    dlq: Option<String>,
    workers: Option<u32>,
    memory_limit_mib: Option<u32>,
    batch_deadline_ms: Option<u64>,
    /// `["clock", "random"]`, a subset, or `[]`.
    capabilities: Option<Vec<String>>,
    fuel: Option<u64>,
    state: Option<PathBuf>,
    /// Stateful plugins: where checkpoints go (a URI or a name under [endpoints]).
    checkpoints: Option<String>,
    /// Stateful plugins: `10s`, `1m`...
    checkpoint_every: Option<String>,
    /// Stateful plugins: `64MiB`...
    state_limit: Option<String>,
}

/// Parses the text of a pipelines file with the command line's defaults (for tools and fuzzing;
/// `runtime run --config` goes through [`RunArgs::pipelines`]).
pub fn parse_pipelines_text(text: &str, dir: &Path) -> Result<Vec<PipelineSpec>> {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }
    let defaults = <Cli as clap::Parser>::parse_from(["runtime"]).run;
    parse_pipelines(text, dir, &[], &defaults)
}

/// Settings as `init` gets them: strings, numbers and booleans as text.
fn settings_of(owner: &str, table: BTreeMap<String, toml::Value>) -> Result<Vec<(String, String)>> {
    table
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(anyhow!(
                    "pipeline `{owner}`: setting `{k}` is a {}: give a string, number or boolean",
                    other.type_str()
                ))
                }
            };
            Ok((k, v))
        })
        .collect()
}

/// Parses a pipelines file; `defaults` gives what an entry leaves out (the CLI's values).
pub(super) fn parse_pipelines(
    text: &str,
    dir: &Path,
    overrides: &[(String, String)],
    defaults: &RunArgs,
) -> Result<Vec<PipelineSpec>> {
    let file: PipelinesFile =
        toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
    if file.pipelines.is_empty() {
        bail!("no pipelines: add at least one [[pipeline]] table");
    }
    let mut endpoints = file.endpoints;
    for (name, uri) in overrides {
        if let Some(slot) = endpoints.get_mut(name) {
            *slot = uri.clone();
        } else if defaults.endpoints.iter().any(|(n, _)| n == name) {
            bail!(
                "--endpoint {name}=...: the file has no endpoint `{name}` (it has: {})",
                endpoints.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let resolve = |pipeline: &str, what: &str, v: &str| -> Result<String> {
        let uri = if v.contains("://") || v == "stdin" || v == "stdout" {
            v.to_owned()
        } else {
            endpoints.get(v).cloned().ok_or_else(|| {
                anyhow!("pipeline `{pipeline}`: {what} `{v}` is neither a URI nor a name under [endpoints]")
            })?
        };
        Ok(crate::connector::relative_to(&uri, dir))
    };
    let mut names = std::collections::HashSet::new();
    let mut specs = Vec::new();
    for p in file.pipelines {
        if !names.insert(p.name.clone()) {
            bail!("two pipelines are named `{}`: names must be unique", p.name);
        }
        let in_pipeline = |e: String| anyhow!("pipeline `{}`: {e}", p.name);
        let batch_size = p.batch_size.unwrap_or(defaults.batch_size);
        let memory_limit_mib = p.memory_limit_mib.unwrap_or(defaults.memory_limit_mib);
        let batch_deadline_ms = p.batch_deadline_ms.unwrap_or(defaults.batch_deadline_ms);
        limits::check("batch_size", Some(batch_size), &limits::BATCH_SIZE)
            .and_then(|()| {
                limits::check(
                    "memory_limit_mib",
                    Some(memory_limit_mib),
                    &limits::MEMORY_LIMIT_MIB,
                )
            })
            .and_then(|()| {
                limits::check(
                    "batch_deadline_ms",
                    Some(batch_deadline_ms),
                    &limits::BATCH_DEADLINE_MS,
                )
            })
            .and_then(|()| limits::check("workers", p.workers, &limits::WORKERS))
            .and_then(|()| limits::check("fuel", p.fuel, &limits::FUEL))
            .map_err(in_pipeline)?;
        let rate = p
            .rate
            .or(defaults.rate)
            .map(|rate| super::args::parse_rate(&rate.to_string()))
            .transpose()
            .map_err(|e| in_pipeline(format!("rate: {e}")))?;
        let settings = settings_of(&p.name, p.settings)?
            .into_iter()
            .chain(defaults.settings.iter().cloned())
            .collect();
        let mut paths = Vec::new();
        let mut overrides = Vec::new();
        for entry in p.plugins {
            match entry {
                PluginEntry::Path(path) => {
                    paths.push(dir.join(path));
                    overrides.push(PluginOverrides::default());
                }
                PluginEntry::Table(t) => {
                    let what = format!("{} ({})", p.name, t.path.display());
                    let in_plugin = |e: String| anyhow!("pipeline `{what}`: {e}");
                    limits::check(
                        "memory_limit_mib",
                        t.memory_limit_mib,
                        &limits::MEMORY_LIMIT_MIB,
                    )
                    .and_then(|()| {
                        limits::check(
                            "batch_deadline_ms",
                            t.batch_deadline_ms,
                            &limits::BATCH_DEADLINE_MS,
                        )
                    })
                    .and_then(|()| limits::check("fuel", t.fuel, &limits::FUEL))
                    .map_err(in_plugin)?;
                    overrides.push(PluginOverrides {
                        settings: settings_of(&what, t.settings)?,
                        memory_limit_mib: t.memory_limit_mib,
                        batch_deadline_ms: t.batch_deadline_ms,
                        fuel: t.fuel,
                        capabilities: t
                            .capabilities
                            .map(|names| Capabilities::parse(names.iter().map(String::as_str)))
                            .transpose()
                            .map_err(|e| anyhow!("pipeline `{what}`: {e}"))?,
                    });
                    paths.push(dir.join(t.path));
                }
            }
        }
        specs.push(PipelineSpec {
            source: p
                .source
                .as_deref()
                .map(|s| resolve(&p.name, "source", s))
                .transpose()?,
            sink: resolve(&p.name, "sink", &p.sink)?,
            outputs: p
                .outputs
                .iter()
                .map(|(name, uri)| {
                    Ok((
                        name.clone(),
                        resolve(&p.name, &format!("output `{name}`"), uri)?,
                    ))
                })
                .collect::<Result<_>>()?,
            plugins: paths,
            overrides,
            settings,
            rate,
            count: p.count,
            batch_size,
            on_error: p.on_error.unwrap_or(defaults.on_error),
            dlq: p
                .dlq
                .as_deref()
                .or(defaults.dlq.as_deref())
                .map(|d| resolve(&p.name, "dlq", d))
                .transpose()?,
            workers: p.workers.or(defaults.workers),
            memory_limit_mib,
            batch_deadline_ms,
            capabilities: match &p.capabilities {
                Some(names) => Some(
                    Capabilities::parse(names.iter().map(String::as_str))
                        .map_err(|e| anyhow!("pipeline `{}`: {e}", p.name))?,
                ),
                None => defaults.capabilities,
            },
            fuel: p.fuel.or(defaults.fuel),
            state: p.state.map(|f| dir.join(f)),
            stateful: StatefulOptions {
                checkpoints: p
                    .checkpoints
                    .as_deref()
                    .or(defaults.checkpoints.as_deref())
                    .map(|c| resolve(&p.name, "checkpoints", c))
                    .transpose()?,
                checkpoint_every: match &p.checkpoint_every {
                    Some(d) => super::args::parse_duration(d)
                        .map_err(|e| anyhow!("pipeline `{}`: checkpoint_every: {e}", p.name))?,
                    None => defaults.checkpoint_every,
                },
                state_limit: match &p.state_limit {
                    Some(n) => super::args::parse_size(n)
                        .map_err(|e| anyhow!("pipeline `{}`: state_limit: {e}", p.name))?,
                    None => defaults.state_limit,
                },
            },
            name: p.name,
        });
    }
    Ok(specs)
}
