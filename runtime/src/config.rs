//! What a run is made of: plugins, their config, pacing, limits and error policy, from the
//! command line (and `SLUICE_*` environment variables).

use std::path::PathBuf;
use std::time::Duration;

use crate::pipeline::ErrorPolicy;
use crate::plugin::Limits;

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

    /// A `key=value` pair handed to every plugin's `init`. Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,

    /// Records per second a source plugin may produce; 0 = as fast as possible.
    #[arg(long, default_value_t = 333.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Stop after this many source records (default: run until the input ends or a signal).
    #[arg(long)]
    pub count: Option<u64>,

    /// Records per plugin call.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch_size: u32,

    /// What to do with a record that fails: stop (`fail`) or report it and go on (`skip`).
    #[arg(long, value_enum, default_value_t = ErrorPolicy::Fail)]
    pub on_error: ErrorPolicy,

    /// Parallel workers, each with its own plugin instances; Kafka partitions are spread over
    /// them (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,

    /// Memory cap per plugin instance, in MiB.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub memory_limit_mib: u32,

    /// Time one plugin call (one batch) may take, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_deadline_ms: u64,

    /// Where compiled plugins are cached (default: $XDG_CACHE_HOME/sluice or ~/.cache/sluice).
    #[arg(long, env = "SLUICE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl RunArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: (self.memory_limit_mib as usize) << 20,
            batch_deadline: Duration::from_millis(self.batch_deadline_ms),
        }
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (for example --config seed=42)"
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

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("NaN").is_err());
    }
}
