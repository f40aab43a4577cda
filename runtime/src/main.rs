//! The `runtime` command: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "runtime",
    version,
    about = "Sluice: stream records through WebAssembly plugins"
)]
struct Cli {
    /// Log filter (tracing syntax, e.g. `info`, `debug`, `sluice=debug,plugin=warn`).
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    log: String,

    /// Log lines as human-readable text or one JSON object per line (with the pipeline and
    /// plugin as fields).
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: a source (a source plugin, stdin, Kafka, a bucket or directory) ->
    /// transform plugins -> a sink (stdout, Kafka, a bucket or directory) and named outputs; or
    /// every pipeline of a pipelines file (--config).
    Run(Box<sluice::config::RunArgs>),
    /// Run a plugin on golden cases (inputs and expected outputs as JSON lines) and compare,
    /// record by record; exits non-zero on any difference.
    Test(Box<sluice::golden::TestArgs>),
    /// Create a plugin project (Rust, Python or JavaScript) with a working example, the WIT,
    /// build instructions and golden cases.
    New(Box<sluice::scaffold::NewArgs>),
    /// Show a plugin's world, exports, imports, size and sha256; or, with --admin, which
    /// version of each plugin is live in a running `runtime`.
    Inspect {
        #[arg(required_unless_present = "admin")]
        plugin: Option<PathBuf>,
        #[arg(long, env = "SLUICE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// The admin address of a running `runtime run --admin ADDR`.
        #[arg(long, value_name = "ADDR", conflicts_with = "plugin")]
        admin: Option<String>,
        /// Its --admin-token, if it has one.
        #[arg(
            long,
            env = "SLUICE_ADMIN_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true
        )]
        admin_token: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("warning: ignoring --log `{}` ({e}); using `info`", cli.log);
        EnvFilter::new("info")
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }

    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                let result = rt.block_on(sluice::run(*args));
                // Work abandoned after the grace period must not hold the exit.
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
                result
            })
            .map(drop),
        Command::Test(args) => sluice::golden::run(&args, &mut std::io::stdout()).and_then(|s| {
            if s.failed > 0 {
                anyhow::bail!(
                    "{} of {} record(s) differ from the expected ones",
                    s.failed,
                    s.records
                )
            }
            Ok(())
        }),
        Command::New(args) => sluice::scaffold::create(&args).map(|(_, next)| print!("{next}")),
        Command::Inspect {
            plugin: Some(plugin),
            cache_dir,
            ..
        } => sluice::inspect(&plugin, cache_dir.as_deref()).and_then(|(report, world)| {
            print!("{report}");
            world.map(drop)
        }),
        Command::Inspect {
            admin, admin_token, ..
        } => sluice::admin::live_versions(
            admin.as_deref().unwrap_or_default(),
            admin_token.as_deref(),
        )
        .map(|report| print!("{report}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
