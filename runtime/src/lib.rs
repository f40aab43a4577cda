//! Sluice: a stream-processing runtime whose business logic lives in WebAssembly plugins.
//! `main.rs` parses the command line and calls [`run`] or [`inspect`].

pub mod config;
pub mod connector;
pub mod format;
pub mod pipeline;
pub mod plugin;
pub mod record;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use tokio::sync::watch;

use config::RunArgs;
use connector::{generator::PluginSource, Source};
use pipeline::{Pipeline, Stats};
use plugin::{ArtifactCache, PluginEngine, SourceInstance, World};

/// Loads the plugins, wires source -> chain -> sink and runs until the input ends, `--count`
/// is reached or SIGINT/SIGTERM arrives.
pub async fn run(args: RunArgs) -> Result<Stats> {
    let engine = Arc::new(PluginEngine::new(
        args.cache_dir
            .clone()
            .unwrap_or_else(ArtifactCache::default_dir),
    )?);
    let mut source: Option<Box<dyn Source>> = None;
    let mut plugins = Vec::new();
    for (i, path) in args.plugins.iter().enumerate() {
        let plugin = engine.load(path, args.config.clone(), args.limits())?;
        tracing::info!(plugin = %plugin.name, world = %plugin.world, sha256 = %plugin.compiled.sha256, "loaded");
        match plugin.world {
            World::Source if i == 0 && args.source.is_none() => {
                source = Some(Box::new(PluginSource::new(
                    SourceInstance::new(plugin)?,
                    args.rate,
                )));
            }
            World::Source if i == 0 => bail!(
                "{} is a source plugin and --source {} is given too: use one of them",
                path.display(),
                args.source.as_deref().unwrap_or_default()
            ),
            World::Source => bail!(
                "{} implements the `source` world, but only the first --plugin may be a source; \
                 put it first, or use a transform here",
                path.display()
            ),
            World::Transform => plugins.push(plugin),
        }
    }
    let batch_size = args.batch_size as usize;
    let mut shutdown = shutdown_signal()?;
    // Opening waits for unreachable brokers (retrying with backoff); a signal ends the wait.
    let open = async {
        let source = match source {
            Some(source) => source,
            None => {
                connector::open_source(args.source.as_deref().unwrap_or("stdin"), batch_size)
                    .await?
            }
        };
        anyhow::Ok((source, connector::open_sink(&args.sink).await?))
    };
    let (source, sink) = tokio::select! {
        opened = open => opened?,
        _ = shutdown.changed() => {
            tracing::info!("stopped before the endpoints were ready; nothing was read");
            return Ok(Stats::default());
        }
    };
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n as usize,
    );
    let pipeline = Pipeline {
        source,
        plugins,
        sink,
        policy: args.on_error,
        batch_size,
        count: args.count,
        workers,
    };
    let stats = pipeline.run(shutdown).await?;
    tracing::info!(
        records_in = stats.records_in,
        records_out = stats.records_out,
        records_failed = stats.records_failed,
        "done"
    );
    Ok(stats)
}

/// Turns true at SIGINT or SIGTERM.
fn shutdown_signal() -> Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("signal received: finishing the batch in flight");
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// What `runtime inspect` prints: file facts, the world, exports and imports; and whether the
/// file is a plugin (the report is useful either way).
pub fn inspect(path: &Path, cache_dir: Option<&Path>) -> Result<(String, Result<World>)> {
    use std::fmt::Write;
    let engine =
        PluginEngine::new(cache_dir.map_or_else(ArtifactCache::default_dir, Path::to_owned))?;
    let compiled = engine.compile(path)?;
    let mut out = String::new();
    writeln!(out, "file:    {}", compiled.path.display())?;
    writeln!(out, "size:    {} bytes", compiled.size)?;
    writeln!(out, "sha256:  {}", compiled.sha256)?;
    let world = compiled.world(engine.engine());
    match &world {
        Ok(w) => writeln!(out, "world:   {w} ({})", plugin::CONTRACT)?,
        Err(_) => writeln!(out, "world:   none")?,
    }
    for (title, imports) in [("exports", false), ("imports", true)] {
        writeln!(out, "{title}:")?;
        for (name, kind) in compiled.items(engine.engine(), imports) {
            writeln!(out, "  {name}: {kind}")?;
        }
    }
    Ok((out, world))
}
