//! The command line of `runtime run`, and the pipelines it describes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::file::parse_pipelines;
use super::limits;
use super::spec::{PipelineSpec, StatefulOptions};
use crate::failure::ErrorPolicy;
use crate::plugin::Capabilities;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A plugin (.wasm component). The first may be a source (e.g. mock.wasm) instead of
    /// --source. Repeat to chain transforms in order.
    #[arg(long = "plugin", value_name = "FILE")]
    pub plugins: Vec<PathBuf>,

    /// Where records come from: `stdin` (JSON lines), kafka://HOST:PORT/TOPIC?group=GROUP,
    /// s3://BUCKET/PREFIX?endpoint=URL&format=parquet|jsonl, file://DIR?format=... or
    /// mem://NAME. Default: stdin, unless the first plugin is a source.
    #[arg(long, value_name = "URI")]
    pub source: Option<String>,

    /// Where records go: `stdout` (JSON lines), kafka://HOST:PORT/TOPIC,
    /// s3://BUCKET/PREFIX?endpoint=URL&format=parquet|jsonl, file://DIR?format=... or mem://NAME.
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

    /// Records per second the source may produce; 0 = as fast as possible [default: 333 for a
    /// source plugin, no limit for other sources]
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Stateful plugins: where their checkpoints go (`file://DIR` or
    /// `s3://BUCKET/PREFIX?endpoint=...`). Default: beside a table's data or an object sink's.
    #[arg(long, value_name = "URI")]
    pub checkpoints: Option<String>,

    /// Stateful plugins: how often their state is checkpointed (into a table: committed).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub checkpoint_every: Duration,

    /// Stateful plugins: bytes of state one source lane may hold per plugin (a put past it is
    /// that record's failure).
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size)]
    pub state_limit: usize,

    /// Stop after this many source records (default: run until the input ends or a signal).
    #[arg(long)]
    pub count: Option<u64>,

    /// Records per plugin call (at most; a batch is what the source has ready, and is cut at
    /// 4 MiB of keys and values).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(limits::BATCH_SIZE))]
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
    #[arg(long, value_parser = clap::value_parser!(u32).range(limits::WORKERS))]
    pub workers: Option<u32>,

    /// Memory cap per plugin instance, in MiB.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(limits::MEMORY_LIMIT_MIB))]
    pub memory_limit_mib: u32,

    /// Fuel (roughly, wasm instructions) one plugin call may burn; off by default (metering
    /// costs every call; the batch deadline always applies).
    #[arg(long, value_parser = clap::value_parser!(u64).range(limits::FUEL))]
    pub fuel: Option<u64>,

    /// What plugins may read beyond their input: `clock`, `random` (comma-separated) or `none`.
    /// Default: source plugins get both, transforms neither. Files, network and environment
    /// are never offered.
    #[arg(long = "allow", value_name = "CAPABILITIES", value_parser = parse_capabilities)]
    pub capabilities: Option<Capabilities>,

    /// Time one plugin call (one batch) may take, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(limits::BATCH_DEADLINE_MS))]
    pub batch_deadline_ms: u64,

    /// Swap in a plugin's new version when its file changes (atomic rename or in-place write).
    #[arg(long)]
    pub watch: bool,

    /// Serve the admin API (list versions, upload a new one, roll back) on this loopback
    /// address, e.g. 127.0.0.1:9901. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// A secret the admin API asks of every request to `/pipelines…` (`Authorization: Bearer
    /// TOKEN`; a request without it is 401). With it, --admin may listen beyond loopback.
    #[arg(
        long,
        env = "SLUICE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Run FILE as a shadow of the plugin NAME (its file name, with or without `.wasm`, or its
    /// position): every batch also goes through it, its outputs are compared with the live
    /// ones and never written (the admin API's `GET …/plugins/NAME/shadow` reports). Repeatable.
    #[arg(long, value_name = "NAME=FILE")]
    pub shadow: Vec<String>,

    /// After SIGINT/SIGTERM (or a pipeline failing), how long the pipelines may take to drain,
    /// flush and commit before the run gives up with an error (nothing acknowledged is lost).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub grace_secs: u64,

    /// How often each pipeline logs its progress (records in, out and failed, and records/s)
    /// while records flow; 0 = never.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub progress_secs: u64,

    /// Serve Prometheus metrics (GET /metrics), GET /health (200 while every pipeline runs, 503
    /// naming what is wrong) and GET /ready on this loopback address, e.g. 127.0.0.1:9902 (the
    /// admin address serves them too).
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

impl RunArgs {
    pub fn rollback_policy(&self) -> crate::plugin::RollbackPolicy {
        crate::plugin::RollbackPolicy {
            max_failure_rate: self.rollback_failure_rate,
            window_records: self.rollback_window_records,
            window: Duration::from_secs(self.rollback_window_secs),
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
                stateful: StatefulOptions {
                    checkpoints: self.checkpoints.clone(),
                    checkpoint_every: self.checkpoint_every,
                    state_limit: self.state_limit,
                },
            }]),
        }
    }
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::connector::uri::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a duration: use e.g. 10s, 500ms or 2m"))
}

pub(super) fn parse_size(s: &str) -> Result<usize, String> {
    crate::connector::uri::parse_size(s)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a size: use e.g. 64MiB, 512KiB or 1000000"))
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (for example --set seed=42)"
        )),
    }
}

pub(super) fn parse_capabilities(s: &str) -> Result<Capabilities, String> {
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

pub(super) fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give records per second >= 0 (0 = as fast as possible)"
        )),
    }
}
