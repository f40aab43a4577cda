//! The orchestrator: loads the plugins, opens every pipeline's endpoints, runs the pipelines
//! until their inputs end or a signal arrives, reloads plugins on SIGHUP, and drains on the way
//! out.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::{PipelineSpec, RunArgs};
use crate::connector::keepers::{CheckpointRequests, Keepers};
use crate::connector::{self, SinkRole, Source, SourceOptions};
use crate::context::Context;
use crate::health::{self, State};
use crate::pipeline::dead_letters::DeadLetters;
use crate::pipeline::generator::{self, PluginSource};
use crate::pipeline::stateful::Checkpointing;
use crate::pipeline::{Pipeline, Stats};
use crate::plugin::{self, ArtifactCache, PluginEngine, PluginSlot, SourceInstance, World};
use crate::state::StateStore;
use crate::sync::Locked;
use crate::{admin, metrics};

/// Loads the plugins, opens the endpoints of every pipeline (one from the command line, or all
/// of a pipelines file) and runs them until their inputs end, `count` is reached or
/// SIGINT/SIGTERM arrives. Returns each pipeline's name and figures.
pub async fn run(args: RunArgs) -> Result<Vec<(String, Stats)>> {
    let specs = args.pipelines()?;
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(ArtifactCache::default_dir);
    let fuel = specs.iter().any(PipelineSpec::uses_fuel);
    let engine = Arc::new(PluginEngine::with_fuel(cache_dir.clone(), fuel)?);
    // Every plugin of every pipeline loads (and `init`s) before anything is read.
    let mut loaded = Vec::new();
    for spec in &specs {
        loaded.push(load_plugins(&engine, spec, args.rollback_policy())?);
    }
    let slots: Vec<Arc<PluginSlot>> = loaded.iter().flat_map(|(_, s)| s.iter().cloned()).collect();
    // Reloading is armed before the admin API answers: once it does, every trigger works.
    reload_on_sighup(args.clone(), specs.clone(), slots.clone())?;
    if args.watch {
        tokio::spawn(plugin::watch_files(slots.clone()));
    }
    // Everything this run shares; a second run in the same process gets its own.
    let ctx = Context::default();
    let metrics = Arc::new(metrics::Metrics::new(ctx.endpoints.clone()));
    for spec in &specs {
        let behind: Vec<String> = spec
            .source
            .iter()
            .flat_map(|s| connector::endpoints_behind(s))
            .collect();
        let mut endpoints = spec.endpoints();
        endpoints.extend(behind.iter().map(String::as_str));
        ctx.health.add_pipeline(&spec.name, &endpoints);
    }
    metrics.add_slots(&slots);
    let shadowed = slots.clone();
    for given in &args.shadow {
        let (name, file) = given.split_once('=').ok_or_else(|| {
            anyhow!("--shadow {given}: give NAME=FILE, e.g. --shadow enrich=enrich-next.wasm")
        })?;
        let slot = slots.iter().find(|s| s.is_named(name)).ok_or_else(|| {
            anyhow!("--shadow {given}: no plugin `{name}` runs here (name one by its file name or position)")
        })?;
        slot.start_shadow(std::path::Path::new(file))
            .await
            .with_context(|| format!("--shadow {given}"))?;
    }
    if let Some(addr) = &args.metrics {
        let routes = admin::Routes {
            admin: None,
            metrics: metrics.clone(),
            health: ctx.health.clone(),
        };
        admin::serve(addr, "--metrics", routes).await?;
    }
    if let Some(addr) = &args.admin {
        let admin = admin::Admin {
            slots,
            uploads: cache_dir.join("uploads"),
            token: args.admin_token.clone().filter(|t| !t.is_empty()),
        };
        let routes = admin::Routes {
            admin: Some(admin),
            metrics: metrics.clone(),
            health: ctx.health.clone(),
        };
        admin::serve(addr, "--admin", routes).await?;
    }
    let mut shutdown = shutdown_signal()?;
    // Opening waits for unreachable brokers (retrying with backoff); a signal ends the wait.
    let open = async {
        let mut pipelines = Vec::new();
        for (spec, (source, plugins)) in specs.iter().zip(loaded) {
            // Sinks first: one that keeps source positions registers itself for the source.
            let role = |output| SinkRole {
                pipeline: &spec.name,
                output,
            };
            let mut sink = connector::open_sink(&spec.sink, role(None), &ctx)
                .await
                .with_context(|| pipeline_context(&specs, spec))?;
            let mut outputs = Vec::new();
            for (name, uri) in &spec.outputs {
                let sink = connector::open_sink(uri, role(Some(name)), &ctx)
                    .await
                    .with_context(|| {
                        format!("{}: output `{name}`", pipeline_context(&specs, spec))
                    })?;
                outputs.push((Arc::from(name.as_str()), sink));
            }
            let dead_letters = match &spec.dlq {
                Some(uri) => Some(DeadLetters::new(
                    &spec.name,
                    connector::open_sink(uri, role(Some("dead-letters")), &ctx)
                        .await
                        .with_context(|| {
                            format!(
                                "{}: the dead-letter endpoint",
                                pipeline_context(&specs, spec)
                            )
                        })?,
                )),
                None => None,
            };
            let checkpointing = checkpointing(spec, &plugins, &mut sink, &mut outputs, &ctx)
                .await
                .with_context(|| pipeline_context(&specs, spec))?;
            let options = SourceOptions {
                pipeline: spec.name.clone(),
                batch_size: spec.batch_size as usize,
                state: spec.state.clone(),
            };
            let rate = match (&source, spec.rate) {
                (_, Some(rate)) => rate,
                (Some(_), None) => generator::DEFAULT_RATE,
                (None, None) => 0.0,
            };
            let source = match source {
                Some(source) => source,
                None => {
                    let uri = spec.source.as_deref().unwrap_or("stdin");
                    connector::open_source(uri, &options, &ctx)
                        .await
                        .with_context(|| pipeline_context(&specs, spec))?
                }
            };
            let workers = spec.workers.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |n| n as usize,
            );
            pipelines.push(Pipeline {
                source,
                plugins,
                sink,
                outputs,
                policy: spec.on_error,
                batch_size: spec.batch_size as usize,
                rate,
                count: spec.count,
                workers,
                metrics: metrics.pipeline(&spec.name),
                dead_letters,
                progress_every: (args.progress_secs > 0)
                    .then(|| std::time::Duration::from_secs(args.progress_secs)),
                checkpointing,
            });
        }
        connector::seal(&ctx)?;
        for spec in &specs {
            ctx.health.set_state(&spec.name, State::Running);
        }
        anyhow::Ok(pipelines)
    };
    let pipelines = tokio::select! {
        opened = open => opened?,
        _ = shutdown.changed() => {
            tracing::info!("stopped before the endpoints were ready; nothing was read");
            return Ok(Vec::new());
        }
    };
    // SIGINT/SIGTERM, or a pipeline failing, stops the others (they drain first).
    let stop = ctx.stopping();
    let (failed, mut any_failed) = watch::channel(false);
    let stopper = {
        let ctx = ctx.clone();
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => {}
                _ = any_failed.wait_for(|f| *f) => {}
            }
            ctx.stop();
            for name in names {
                ctx.health.set_state(&name, State::Draining);
            }
        })
    };
    // A pipeline fed by an in-process topic ends when the topic's writers do, so what they
    // wrote is finished first; it never stops on its own.
    let (_never_tx, never) = watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    for (spec, pipeline) in specs.iter().zip(pipelines) {
        let stop = if pipeline.source.fed_in_process() {
            never.clone()
        } else {
            stop.clone()
        };
        let name = spec.name.clone();
        let failed = failed.clone();
        let health = ctx.health.clone();
        let span = tracing::info_span!("pipeline", pipeline = %name);
        running.spawn(
            async move {
                let result = pipeline.run(stop).await;
                health.set_state(
                    &name,
                    match &result {
                        Ok(_) => State::Done,
                        Err(e) => State::Failed(format!("{e:#}")),
                    },
                );
                match &result {
                    Ok(stats) => tracing::info!(
                        records_in = stats.records_in,
                        records_out = stats.records_out,
                        records_failed = stats.records_failed,
                        "done"
                    ),
                    Err(_) => {
                        let _ = failed.send(true);
                    }
                }
                (name, result)
            }
            .instrument(span),
        );
    }
    let mut results = Vec::new();
    let mut first_error = None;
    let grace = std::time::Duration::from_secs(args.grace_secs);
    let mut stopping = stop.clone();
    let deadline = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(deadline);
    loop {
        let joined = tokio::select! {
            joined = running.join_next() => joined,
            _ = &mut deadline => {
                running.abort_all();
                bail!(
                    "the pipelines did not finish within the grace period of {} s after the stop \
                     signal (a sink not acknowledging?); what was in flight is not acknowledged \
                     and will be read again at the next start (raise --grace-secs to wait longer)",
                    grace.as_secs()
                );
            }
        };
        let Some(joined) = joined else { break };
        let (name, result) = joined.map_err(|e| anyhow!("a pipeline panicked: {e}"))?;
        match result {
            Ok(stats) => results.push((name, stats)),
            Err(e) if specs.len() == 1 => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(e.context(format!("pipeline `{name}`")))),
        }
    }
    stopper.abort();
    for slot in &shadowed {
        if let Some(r) = slot.shadow().map(|s| s.report()) {
            tracing::info!(pipeline = %slot.pipeline, slot = slot.index, compared = r.compared, equal = r.equal, different = r.different, shadow_failed = r.shadow_failed, live_failed = r.live_failed, skipped_batches = r.skipped_batches, batches = r.batches, live_batch_us = r.live_batch_us, shadow_batch_us = r.shadow_batch_us, "shadow run");
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

fn pipeline_context(specs: &[PipelineSpec], spec: &PipelineSpec) -> String {
    if specs.len() == 1 {
        "opening the endpoints".to_owned()
    } else {
        format!("pipeline `{}`", spec.name)
    }
}

type Loaded = (Option<Box<dyn Source>>, Vec<Arc<PluginSlot>>);

/// How a pipeline with stateful plugins checkpoints: where (`--checkpoints`, else beside the
/// sink's data), how often, and which sink's positions are the truth. `None` without such a
/// plugin.
async fn checkpointing(
    spec: &PipelineSpec,
    plugins: &[Arc<PluginSlot>],
    sink: &mut Box<dyn connector::Sink>,
    outputs: &mut [(Arc<str>, Box<dyn connector::Sink>)],
    ctx: &Context,
) -> Result<Option<Arc<Checkpointing>>> {
    let stateful: Vec<String> = plugins
        .iter()
        .map(|slot| slot.live())
        .filter(|v| v.plugin.world == World::Stateful)
        .map(|v| v.plugin.name.to_string())
        .collect();
    if stateful.is_empty() {
        return Ok(None);
    }
    let blobs = match &spec.stateful.checkpoints {
        Some(uri) => connector::blobs::open(uri, ctx).await?,
        None => match sink.checkpoint_blobs(ctx).await? {
            Some(blobs) => blobs,
            None => bail!(
                "{} keeps state and the sink `{}` has no place for its checkpoints: add \
                 --checkpoints file://DIR (or s3://BUCKET/PREFIX?endpoint=...), or write to a \
                 table or a bucket, which keep them beside their data",
                stateful.join(", "),
                health::endpoint_name(&spec.sink)
            ),
        },
    };
    sink.commit_at_checkpoints().await?;
    for (_, s) in outputs.iter_mut() {
        s.commit_at_checkpoints().await?;
    }
    let store = Arc::new(StateStore::new(blobs, &spec.name));
    tracing::info!(pipeline = %spec.name, checkpoints = %store.describe(), every = ?spec.stateful.checkpoint_every, "stateful plugins: state is checkpointed");
    // A slot's stage in the chain is its place among the pipeline's transforms.
    for (stage, slot) in plugins.iter().enumerate() {
        if slot.live().plugin.world == World::Stateful {
            slot.keep_state_in(store.clone(), stage);
        }
    }
    Ok(Some(Arc::new(Checkpointing {
        store,
        keeper: ctx.shared::<Keepers>().of(&spec.name).into_iter().next(),
        every: spec.stateful.checkpoint_every,
        requests: ctx.shared::<CheckpointRequests>().of(&spec.name),
        state_limit: spec.stateful.state_limit,
    })))
}

/// Loads a pipeline's plugins: the first may be a source, the rest are transforms, each in a
/// slot that can swap it for a new version.
fn load_plugins(
    engine: &Arc<PluginEngine>,
    spec: &PipelineSpec,
    policy: plugin::RollbackPolicy,
) -> Result<Loaded> {
    let mut source: Option<Box<dyn Source>> = None;
    let mut plugins = Vec::new();
    for (i, path) in spec.plugins.iter().enumerate() {
        let plugin = engine.load(path, spec.plugin_settings(i), spec.plugin_limits(i))?;
        tracing::info!(pipeline = %spec.name, plugin = %plugin.name, world = %plugin.world, sha256 = %plugin.compiled.sha256, "loaded");
        match plugin.world {
            World::Source if i == 0 && spec.source.is_none() => {
                source = Some(Box::new(PluginSource::new(SourceInstance::new(plugin)?)));
            }
            World::Source if i == 0 => bail!(
                "{} is a source plugin and a source ({}) is given too: use one of them",
                path.display(),
                spec.source.as_deref().unwrap_or_default()
            ),
            World::Source => bail!(
                "{} implements the `source` world, but only the first plugin may be a source; \
                 put it first, or use a transform here",
                path.display()
            ),
            World::Transform | World::Stateful => plugins.push(PluginSlot::new(
                &spec.name,
                i,
                plugin,
                engine.clone(),
                spec.plugin_settings(i),
                policy,
            )),
        }
    }
    Ok((source, plugins))
}

/// SIGHUP: reloads every plugin file (and, with --config, the pipelines file: plugin files
/// and settings change in place; other changes need a restart and are reported).
fn reload_on_sighup(
    args: RunArgs,
    specs: Vec<PipelineSpec>,
    slots: Vec<Arc<PluginSlot>>,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading plugins");
            if args.config.is_some() {
                match args.pipelines() {
                    Ok(new) => {
                        let shapes = |s: &[PipelineSpec]| {
                            s.iter().map(PipelineSpec::shape).collect::<Vec<_>>()
                        };
                        if shapes(&new) != shapes(&specs) {
                            tracing::warn!("the pipelines file changed beyond plugin files and settings; those changes need a restart");
                        }
                        for spec in &new {
                            for slot in slots.iter().filter(|s| s.pipeline == spec.name) {
                                if let Some(path) = spec.plugins.get(slot.index) {
                                    slot.configured.locked().clone_from(path);
                                    slot.set_settings(spec.plugin_settings(slot.index));
                                }
                            }
                        }
                    }
                    Err(e) => tracing::error!(
                        "SIGHUP: the pipelines file is not valid, nothing changes: {e:#}"
                    ),
                }
            }
            for slot in &slots {
                // Errors are logged and counted; the running version stays.
                let _ = slot.swap(&slot.configured_path(), "sighup").await;
            }
        }
    });
    Ok(())
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
