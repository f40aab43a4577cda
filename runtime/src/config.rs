//! What a run is made of: one pipeline from the command line, or several from a pipelines file
//! (TOML), with endpoint URIs overridable from the command line and `SLUICE_ENDPOINT_*`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::failure::ErrorPolicy;
use crate::plugin::{Capabilities, Limits};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A plugin (.wasm component). The first may be a source (e.g. mock.wasm) instead of
    /// --source. Repeat to chain transforms in order.
    #[arg(long = "plugin", value_name = "FILE")]
    pub plugins: Vec<PathBuf>,

    /// Where records come from: `stdin` (JSON lines) or kafka://HOST:PORT/TOPIC?group=GROUP.
    /// Default: stdin, unless the first plugin is a source.
    #[arg(long, value_name = "URI")]
    pub source: Option<String>,

    /// Where records go: `stdout` (JSON lines) or kafka://HOST:PORT/TOPIC.
    #[arg(long, value_name = "URI", default_value = "stdout")]
    pub sink: String,

    /// A named output: records a plugin routes to NAME (`to_output("NAME")`) go to URI instead
    /// of --sink. Repeatable.
    #[arg(long = "output", value_name = "NAME=URI", value_parser = parse_key_value)]
    pub outputs: Vec<(String, String)>,

    /// A pipelines file (TOML) to run instead of the pipeline given by --plugin/--source/--sink;
    /// see examples/stack.toml.
    #[arg(long = "config", value_name = "FILE", conflicts_with_all = ["plugins", "source", "sink", "outputs", "count", "state"])]
    pub config: Option<PathBuf>,

    /// With --config: use URI for the endpoint NAME of the file (also SLUICE_ENDPOINT_NAME=URI).
    /// Repeatable.
    #[arg(long = "endpoint", value_name = "NAME=URI", value_parser = parse_key_value, requires = "config")]
    pub endpoints: Vec<(String, String)>,

    /// A `key=value` pair handed to every plugin's `init`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub settings: Vec<(String, String)>,

    /// Object sources: keep progress (which objects are done) in this local file instead of an
    /// object beside the data.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,

    /// Records per second a source plugin may produce; 0 = as fast as possible.
    #[arg(long, default_value_t = 333.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Stop after this many source records (default: run until the input ends or a signal).
    #[arg(long)]
    pub count: Option<u64>,

    /// Records per plugin call (at most; a batch is what the source has ready, and is cut at
    /// 4 MiB of keys and values).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch_size: u32,

    /// What to do with a record that fails: stop (`fail`), report it and go on (`skip`), or
    /// send it to the dead-letter endpoint and go on (`dlq`, with --dlq).
    #[arg(long, value_enum, default_value_t = ErrorPolicy::Fail)]
    pub on_error: ErrorPolicy,

    /// With --on-error dlq: where failed input records go (a Kafka topic, an object prefix...),
    /// with where and why they failed.
    #[arg(long, value_name = "URI")]
    pub dlq: Option<String>,

    /// Parallel workers, each with its own plugin instances; Kafka partitions are spread over
    /// them (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,

    /// Memory cap per plugin instance, in MiB.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub memory_limit_mib: u32,

    /// Fuel (roughly, wasm instructions) one plugin call may burn; off by default (metering
    /// costs every call; the batch deadline always applies).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub fuel: Option<u64>,

    /// What plugins may read beyond their input: `clock`, `random` (comma-separated) or `none`.
    /// Default: source plugins get both, transforms neither. Files, network and environment
    /// are never offered.
    #[arg(long = "allow", value_name = "CAPABILITIES", value_parser = parse_capabilities)]
    pub capabilities: Option<Capabilities>,

    /// Time one plugin call (one batch) may take, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_deadline_ms: u64,

    /// Swap in a plugin's new version when its file changes (atomic rename or in-place write).
    #[arg(long)]
    pub watch: bool,

    /// Serve the admin API (list versions, upload a new one, roll back) on this loopback
    /// address, e.g. 127.0.0.1:9901. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// After SIGINT/SIGTERM (or a pipeline failing), how long the pipelines may take to drain,
    /// flush and commit before the run gives up with an error (nothing acknowledged is lost).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub grace_secs: u64,

    /// How often each pipeline logs its progress (records in, out and failed, and records/s)
    /// while records flow; 0 = never.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub progress_secs: u64,

    /// Serve Prometheus metrics (GET /metrics) and GET /health on this loopback address, e.g.
    /// 127.0.0.1:9902 (the admin address serves them too).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Roll a freshly swapped-in version back by itself when more than this fraction of the
    /// records it processed failed...
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    pub rollback_failure_rate: f64,

    /// ...within its first this many records...
    #[arg(long, default_value_t = 1000)]
    pub rollback_window_records: u64,

    /// ...or this many seconds, whichever ends first.
    #[arg(long, default_value_t = 30)]
    pub rollback_window_secs: u64,

    /// Where compiled plugins are cached (default: $XDG_CACHE_HOME/sluice or ~/.cache/sluice).
    #[arg(long, env = "SLUICE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// One pipeline, resolved: what `Pipeline` is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    pub name: String,
    pub plugins: Vec<PathBuf>,
    /// Per-plugin limits and settings over the pipeline's, by position (empty: none).
    pub overrides: Vec<PluginOverrides>,
    /// `None`: the first plugin is a source, or stdin.
    pub source: Option<String>,
    pub sink: String,
    /// Named outputs (NAME, URI), in the order given.
    pub outputs: Vec<(String, String)>,
    pub settings: Vec<(String, String)>,
    pub rate: f64,
    pub count: Option<u64>,
    pub batch_size: u32,
    pub on_error: ErrorPolicy,
    pub dlq: Option<String>,
    pub workers: Option<u32>,
    pub memory_limit_mib: u32,
    pub batch_deadline_ms: u64,
    pub capabilities: Option<Capabilities>,
    pub fuel: Option<u64>,
    pub state: Option<PathBuf>,
}

impl RunArgs {
    pub fn rollback_policy(&self) -> crate::plugin::RollbackPolicy {
        crate::plugin::RollbackPolicy {
            max_failure_rate: self.rollback_failure_rate,
            window_records: self.rollback_window_records,
            window: Duration::from_secs(self.rollback_window_secs),
        }
    }
}

/// What one plugin of a pipelines file sets for itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginOverrides {
    pub settings: Vec<(String, String)>,
    pub memory_limit_mib: Option<u32>,
    pub batch_deadline_ms: Option<u64>,
    pub fuel: Option<u64>,
    pub capabilities: Option<Capabilities>,
}

impl PipelineSpec {
    /// The limits of plugin `i`: its own where it sets them, else the pipeline's.
    pub fn plugin_limits(&self, i: usize) -> Limits {
        let o = self.overrides.get(i).cloned().unwrap_or_default();
        Limits {
            memory_bytes: (o.memory_limit_mib.unwrap_or(self.memory_limit_mib) as usize) << 20,
            batch_deadline: Duration::from_millis(
                o.batch_deadline_ms.unwrap_or(self.batch_deadline_ms),
            ),
            fuel: o.fuel.or(self.fuel),
            capabilities: o.capabilities.or(self.capabilities),
        }
    }

    /// The settings plugin `i` gets in `init`: the pipeline's, then its own (which win).
    pub fn plugin_settings(&self, i: usize) -> Vec<(String, String)> {
        let own = self
            .overrides
            .get(i)
            .map(|o| o.settings.clone())
            .unwrap_or_default();
        let mut all: Vec<(String, String)> = self
            .settings
            .iter()
            .filter(|(k, _)| !own.iter().any(|(o, _)| o == k))
            .cloned()
            .collect();
        all.extend(own);
        all
    }

    /// The URIs of its endpoints (source, sink, named outputs, dead letters), for health.
    pub fn endpoints(&self) -> Vec<&str> {
        // No source: stdin or a source plugin, neither of which can be in trouble.
        self.source
            .as_deref()
            .into_iter()
            .chain([self.sink.as_str()])
            .chain(self.outputs.iter().map(|(_, uri)| uri.as_str()))
            .chain(self.dlq.as_deref())
            .collect()
    }

    /// Whether any plugin has a fuel limit (the engine then meters fuel).
    pub fn uses_fuel(&self) -> bool {
        self.fuel.is_some() || self.overrides.iter().any(|o| o.fuel.is_some())
    }

    /// The spec with plugin files and settings left out: what SIGHUP cannot change in place.
    pub fn shape(&self) -> PipelineSpec {
        PipelineSpec {
            plugins: Vec::new(),
            settings: Vec::new(),
            overrides: self
                .overrides
                .iter()
                .map(|o| PluginOverrides {
                    settings: Vec::new(),
                    ..o.clone()
                })
                .collect(),
            ..self.clone()
        }
    }
}

impl RunArgs {
    /// The pipelines to run: the file's, or the one on the command line.
    pub fn pipelines(&self) -> Result<Vec<PipelineSpec>> {
        let specs = self.pipelines_unchecked()?;
        for spec in &specs {
            let name = if specs.len() == 1 {
                String::new()
            } else {
                format!("pipeline `{}`: ", spec.name)
            };
            let mut names = std::collections::HashSet::new();
            for (output, _) in &spec.outputs {
                let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
                if output.is_empty() || !output.chars().all(valid) {
                    bail!("{name}output name `{output}`: use letters, digits, -, _ or . (the name a plugin passes to to_output)");
                }
                if !names.insert(output) {
                    bail!("{name}output `{output}` is given twice: give each name one URI");
                }
            }
            match (spec.on_error, &spec.dlq) {
                (ErrorPolicy::Dlq, None) => bail!("{name}--on-error dlq needs a dead-letter endpoint: add --dlq URI (e.g. kafka://HOST:PORT/TOPIC or s3://BUCKET/PREFIX)"),
                (ErrorPolicy::Fail | ErrorPolicy::Skip, Some(dlq)) => bail!("{name}a dead-letter endpoint ({dlq}) is given but failed records are not sent there: add --on-error dlq"),
                _ => {}
            }
        }
        Ok(specs)
    }

    fn pipelines_unchecked(&self) -> Result<Vec<PipelineSpec>> {
        match &self.config {
            Some(file) => {
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("cannot read the pipelines file {}", file.display())
                })?;
                let env: Vec<(String, String)> = std::env::vars()
                    .filter_map(|(k, v)| {
                        Some((k.strip_prefix("SLUICE_ENDPOINT_")?.to_ascii_lowercase(), v))
                    })
                    .collect();
                let overrides: Vec<(String, String)> = env
                    .into_iter()
                    .chain(self.endpoints.iter().cloned())
                    .collect();
                let dir = file.parent().unwrap_or(Path::new("."));
                parse_pipelines(&text, dir, &overrides, self)
                    .with_context(|| format!("pipelines file {}", file.display()))
            }
            None => Ok(vec![PipelineSpec {
                name: "main".to_owned(),
                plugins: self.plugins.clone(),
                overrides: Vec::new(),
                source: self.source.clone(),
                sink: self.sink.clone(),
                outputs: self.outputs.clone(),
                settings: self.settings.clone(),
                rate: self.rate,
                count: self.count,
                batch_size: self.batch_size,
                on_error: self.on_error,
                dlq: self.dlq.clone(),
                workers: self.workers,
                memory_limit_mib: self.memory_limit_mib,
                batch_deadline_ms: self.batch_deadline_ms,
                capabilities: self.capabilities,
                fuel: self.fuel,
                state: self.state.clone(),
            }]),
        }
    }
}

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
fn parse_pipelines(
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
        let check = |what: &str, ok: bool, fix: &str| {
            if ok {
                Ok(())
            } else {
                Err(anyhow!("pipeline `{}`: {what}: {fix}", p.name))
            }
        };
        let batch_size = p.batch_size.unwrap_or(defaults.batch_size);
        check(
            "batch_size",
            (1..=65536).contains(&batch_size),
            "use 1 to 65536",
        )?;
        let memory_limit_mib = p.memory_limit_mib.unwrap_or(defaults.memory_limit_mib);
        check(
            "memory_limit_mib",
            (1..=4096).contains(&memory_limit_mib),
            "use 1 to 4096",
        )?;
        let rate = p.rate.unwrap_or(defaults.rate);
        check(
            "rate",
            rate.is_finite() && rate >= 0.0,
            "give records per second >= 0",
        )?;
        let batch_deadline_ms = p.batch_deadline_ms.unwrap_or(defaults.batch_deadline_ms);
        check(
            "batch_deadline_ms",
            batch_deadline_ms >= 1,
            "give milliseconds >= 1",
        )?;
        check(
            "workers",
            p.workers.is_none_or(|w| (1..=1024).contains(&w)),
            "use 1 to 1024",
        )?;
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
                    check(
                        "memory_limit_mib",
                        t.memory_limit_mib.is_none_or(|m| (1..=4096).contains(&m)),
                        "use 1 to 4096",
                    )?;
                    check(
                        "batch_deadline_ms",
                        t.batch_deadline_ms.is_none_or(|d| d >= 1),
                        "give milliseconds >= 1",
                    )?;
                    check("fuel", t.fuel.is_none_or(|f| f >= 1), "give fuel >= 1")?;
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
            name: p.name,
        });
    }
    Ok(specs)
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (for example --set seed=42)"
        )),
    }
}

fn parse_capabilities(s: &str) -> Result<Capabilities, String> {
    Capabilities::parse(s.split(','))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{s}` is not a fraction: give a number from 0 to 1 (0.5 = half)"
        )),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give records per second >= 0 (0 = as fast as possible)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("seed=42"), Ok(("seed".into(), "42".into())));
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("seed").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_key_value("=1").is_err());
    }

    fn args(extra: &[&str]) -> RunArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let argv = ["runtime"].iter().chain(extra).copied();
        <Cli as clap::Parser>::parse_from(argv).run
    }

    const STACK: &str = r#"
        [endpoints]
        raw = "file://data/raw?format=parquet"
        topic = "mem://sessions"

        [[pipeline]]
        name = "gen"
        plugins = ["plugins/mock.wasm"]
        sink = "raw"
        rate = 100
        settings = { seed = 42, region = "eu" }

        [[pipeline]]
        name = "copy"
        source = "topic"
        sink = "stdout"
        on_error = "skip"
        state = "state.json"
    "#;

    #[test]
    fn pipelines_file() {
        let specs = parse_pipelines(STACK, Path::new("/etc/sluice"), &[], &args(&[])).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            specs[0].plugins,
            [PathBuf::from("/etc/sluice/plugins/mock.wasm")]
        );
        assert_eq!(specs[0].sink, "file:///etc/sluice/data/raw?format=parquet");
        assert_eq!(specs[0].rate, 100.0);
        assert_eq!(
            specs[0].settings,
            [("region".into(), "eu".into()), ("seed".into(), "42".into())]
        );
        assert_eq!(specs[1].source.as_deref(), Some("mem://sessions"));
        assert_eq!(specs[1].on_error, ErrorPolicy::Skip);
        assert_eq!(
            specs[1].state,
            Some(PathBuf::from("/etc/sluice/state.json"))
        );
        assert_eq!(specs[1].batch_size, 1024);
    }

    #[test]
    fn outputs_map_names_to_uris_or_endpoints() {
        let text = r#"
            [endpoints]
            lake = "file://lake?format=parquet"

            [[pipeline]]
            name = "p"
            sink = "stdout"
            outputs = { rejected = "kafka://127.0.0.1:9092/rejected", audit = "lake" }
        "#;
        let specs = parse_pipelines(text, Path::new("/x"), &[], &args(&[])).unwrap();
        assert_eq!(
            specs[0].outputs,
            [
                (
                    "audit".to_owned(),
                    "file:///x/lake?format=parquet".to_owned()
                ),
                (
                    "rejected".to_owned(),
                    "kafka://127.0.0.1:9092/rejected".to_owned()
                )
            ]
        );
        let bad = text.replace("\"lake\" }", "\"nowhere\" }");
        let e = parse_pipelines(&bad, Path::new("/x"), &[], &args(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("output `audit` `nowhere` is neither a URI nor a name under [endpoints]"),
            "{e}"
        );
    }

    #[test]
    fn plugins_can_set_their_own_limits_and_settings() {
        let text = r#"
            [[pipeline]]
            name = "p"
            sink = "stdout"
            memory_limit_mib = 64
            settings = { seed = 1, mode = "a" }
            plugins = ["a.wasm", { path = "b.wasm", memory_limit_mib = 16, fuel = 1000, capabilities = ["clock"], settings = { mode = "b" } }]
        "#;
        let specs = parse_pipelines(text, Path::new("/x"), &[], &args(&[])).unwrap();
        let p = &specs[0];
        assert_eq!(
            p.plugins,
            [PathBuf::from("/x/a.wasm"), PathBuf::from("/x/b.wasm")]
        );
        assert_eq!(
            (p.plugin_limits(0).memory_bytes, p.plugin_limits(0).fuel),
            (64 << 20, None)
        );
        let b = p.plugin_limits(1);
        assert_eq!((b.memory_bytes, b.fuel), (16 << 20, Some(1000)));
        assert_eq!(
            b.capabilities,
            Some(Capabilities {
                clock: true,
                random: false
            })
        );
        assert_eq!(
            p.plugin_settings(0),
            [("mode".into(), "a".into()), ("seed".into(), "1".into())]
        );
        assert_eq!(
            p.plugin_settings(1),
            [("seed".into(), "1".into()), ("mode".into(), "b".into())]
        );
        assert!(p.uses_fuel());
        let bad = text.replace("fuel = 1000", "fuel = 0");
        let e = parse_pipelines(&bad, Path::new("/x"), &[], &args(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fuel: give fuel >= 1"), "{e}");
        let bad = text.replace("fuel = 1000", "fuels = 1000");
        assert!(parse_pipelines(&bad, Path::new("/x"), &[], &args(&[])).is_err());
    }

    #[test]
    fn endpoints_are_overridden_by_name() {
        let over = [(
            "topic".to_owned(),
            "kafka://127.0.0.1:9092/sessions".to_owned(),
        )];
        let specs = parse_pipelines(STACK, Path::new("."), &over, &args(&[])).unwrap();
        assert_eq!(
            specs[1].source.as_deref(),
            Some("kafka://127.0.0.1:9092/sessions")
        );
        // A misspelt --endpoint is an error, not ignored.
        let a = args(&["--config", "x.toml", "--endpoint", "topik=mem://x"]);
        let e = parse_pipelines(STACK, Path::new("."), &a.endpoints, &a)
            .unwrap_err()
            .to_string();
        assert!(e.contains("the file has no endpoint `topik`"), "{e}");
    }

    #[test]
    fn bad_pipelines_files_say_where_and_what() {
        let bad = |text: &str| {
            parse_pipelines(text, Path::new("."), &[], &args(&[]))
                .unwrap_err()
                .to_string()
        };
        let e = bad("[[pipeline]]\nname = \"a\"\nsink = \"nowhere\"\n");
        assert!(
            e.contains("sink `nowhere` is neither a URI nor a name under [endpoints]"),
            "{e}"
        );
        let e = bad("[[pipeline]]\nname = \"a\"\nsink = \"stdout\"\nbatch = 3\n");
        assert!(e.contains("unknown field `batch`"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        let e = bad("[[pipeline]]\nname = \"a\"\nsink = \"stdout\"\nbatch_size = 0\n");
        assert!(
            e.contains("pipeline `a`: batch_size: use 1 to 65536"),
            "{e}"
        );
        let e = bad("");
        assert!(e.contains("no pipelines"), "{e}");
        let e = bad("[[pipeline]]\nname = \"a\"\nsink = \"stdout\"\n[[pipeline]]\nname = \"a\"\nsink = \"stdout\"\n");
        assert!(e.contains("two pipelines are named `a`"), "{e}");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("NaN").is_err());
    }
}
