//! Endpoints: where records come from and go to. One file per kind; a new kind is a new file
//! plus one arm in [`open_source`] / [`open_sink`].

pub mod backoff;
pub mod blobs;
pub mod iceberg;
pub mod kafka;
pub mod keepers;
pub mod mem;
pub mod object;
pub mod stdio;
pub mod uri;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::path::Path;

use anyhow::Result;

use crate::context::Context;
use crate::record::Record;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A record the source could not decode; it ends the batch it would have been part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub position: String,
    pub message: String,
    /// The input as it came, where there is one (a malformed event read from Kafka): its dead
    /// letter carries it unchanged.
    pub input: Option<Record>,
}

/// Marks a batch's source positions done; called once every output derived from the batch is
/// durable in the sink (at-least-once: never before).
pub type Ack = Box<dyn FnOnce() + Send>;

/// Records read from a source, in order; `error`, if any, is the input right after them.
#[derive(Default)]
pub struct SourceBatch {
    pub records: Vec<Record>,
    pub error: Option<RecordError>,
    /// Batches of one lane (a Kafka partition) are processed by one worker, in order.
    pub lane: u32,
    pub ack: Option<Ack>,
    /// The first batch of its lane since the source (re)gained it (a Kafka partition
    /// assigned): state kept for the lane must be restored, not taken as it is.
    pub restart: bool,
    /// The last batch of a lane that never goes on (an object read to its end): after it the
    /// lane's stream time is the end of time, so its event-time timers all fire, as at the
    /// end of a bounded input.
    pub ends_lane: bool,
}

pub trait Source: Send {
    /// Up to `max` records of one lane. Returns what is available rather than waiting for a
    /// full batch; `None` at the end of the input.
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>>;

    /// Called once all acknowledged batches are acked, before exit: commit positions, close.
    fn finish(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether another pipeline of this process feeds it: such a source ends when its writers
    /// do, so it must not stop at the stop signal before what they wrote is through.
    fn fed_in_process(&self) -> bool {
        false
    }

    /// Whether this is one ordered stream (stdin) whose batches may go to any worker, so its
    /// plugin calls run in parallel, with outputs still written in the order read.
    fn spread_in_order(&self) -> bool {
        false
    }
}

/// A record a sink refused to write, and why.
#[derive(Debug)]
pub struct Rejected {
    pub index: usize,
    pub message: String,
}

/// An error's text on one line: libraries (iceberg, opendal) spread their context over several.
pub fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a sink does with a batch in which it refuses records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusals {
    /// Writes every record it does not refuse (`skip`, `dlq`: each refused record is handled
    /// on its own).
    WriteTheRest,
    /// Writes only the records made from inputs before the input of the first record it
    /// refuses, and reports that one (`fail`: nothing at or after a failed record may become
    /// durable, or a sink that keeps positions would pass it over after a restart).
    StopAtInput,
}

/// How many of `records` a sink writes under [`Refusals::StopAtInput`] when `refused` is the
/// first it refuses: those before the first output of the same input. The outputs of one input
/// are adjacent and carry its origin.
pub fn before_input_of(records: &[Record], refused: usize) -> usize {
    let Some(origin) = &records[refused].origin else {
        return refused;
    };
    let same = records[..refused]
        .iter()
        .rev()
        .take_while(|r| r.origin.as_ref() == Some(origin))
        .count();
    refused - same
}

/// A checkpoint of a stateful pipeline, as a sink that keeps positions commits it.
#[derive(Debug, Clone)]
pub struct Seal {
    pub id: u64,
    /// The last input position each lane's state took in (`topic/3@` -> 1200).
    pub positions: Vec<(String, u64)>,
    /// The lanes whose state was stored at this checkpoint.
    pub states: Vec<String>,
    /// `Some(true)` once the states are stored, `Some(false)` if that failed for good.
    pub durable: tokio::sync::watch::Receiver<Option<bool>>,
}

/// The sink's reader went away (e.g. `runtime run ... | head`): a normal end, not a failure.
#[derive(Debug, thiserror::Error)]
#[error("the sink was closed by its reader")]
pub struct SinkClosed;

/// What a sink did with a batch: the records it refused, and a future that resolves once the
/// rest is durable (for stdout at once; for Kafka when every delivery is acknowledged).
pub struct Written {
    pub rejected: Vec<Rejected>,
    pub durable: BoxFuture<'static, Result<()>>,
}

impl Written {
    /// Already durable.
    pub fn done(rejected: Vec<Rejected>) -> Self {
        Written {
            rejected,
            durable: Box::pin(async { Ok(()) }),
        }
    }
}

pub trait Sink: Send {
    /// Hands the records to the sink. Records the sink cannot represent are left out and
    /// returned, and what else is written says `refusals`; what is written is durable when
    /// `durable` resolves.
    fn write<'a>(
        &'a mut self,
        records: &'a [Record],
        refusals: Refusals,
    ) -> BoxFuture<'a, Result<Written>>;

    /// Another handle on the same sink, for another worker.
    fn fork(&self) -> Result<Box<dyn Sink>>;

    /// Batches a worker may have written but not yet seen durable before it waits: bounds
    /// memory, and must let a sink that acknowledges whole objects fill one.
    fn max_unacked_batches(&self) -> usize {
        64
    }

    /// Whether writes from every fork land in one stream in the order they were made (stdout,
    /// one Kafka producer): an ordered source may then spread over the workers, writing in turn.
    fn keeps_write_order(&self) -> bool {
        false
    }

    /// Whether the sink keeps the source positions of what it wrote and passes records at or
    /// before them over (tables): written after the pipeline's other sinks, so that under
    /// `fail` it never holds a position past a record another sink refused.
    fn keeps_positions(&self) -> bool {
        false
    }

    /// For a stateful pipeline: from now on the sink makes what it holds durable only at
    /// checkpoints ([`Sink::seal`]), so that what it commits and the state it was made with
    /// move together. Sinks that keep no positions ignore it.
    fn commit_at_checkpoints(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// A checkpoint: what the sink holds now (every worker is paused at it) goes into one
    /// commit with the checkpoint's positions and states, made once `seal.durable` says the
    /// states are stored. Sinks that keep no positions ignore it.
    fn seal<'a>(&'a mut self, _seal: &'a Seal) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Where a stateful pipeline may keep checkpoints beside this sink's data, and under what
    /// name; `None` when the sink has no such place (the pipeline then needs `--checkpoints`).
    fn checkpoint_blobs<'a>(
        &'a mut self,
        _ctx: &'a Context,
    ) -> BoxFuture<'a, Result<Option<Arc<dyn blobs::Blobs>>>> {
        Box::pin(async { Ok(None) })
    }

    /// Whether records keep their key and headers here (Kafka); sinks that keep values only
    /// get dead letters as JSON envelopes with the provenance inside.
    fn keeps_headers(&self) -> bool {
        false
    }
}

/// What a source needs besides its URI.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// The pipeline reading it (its sinks may keep positions for it).
    pub pipeline: String,
    pub batch_size: usize,
    /// A local file for the object source's progress instead of an object beside the data.
    pub state: Option<std::path::PathBuf>,
}

const SOURCES: &str = "stdin, kafka://HOST:PORT/TOPIC?group=GROUP, s3://BUCKET/PREFIX?endpoint=URL&format=parquet|jsonl (&events=kafka://HOST:PORT/TOPIC or &list=events), file://DIR?format=parquet|jsonl or mem://NAME";
const SINKS: &str = "stdout, kafka://HOST:PORT/TOPIC, s3://BUCKET/PREFIX?endpoint=URL&format=parquet|jsonl, file://DIR?format=parquet|jsonl, iceberg://HOST:PORT/NAMESPACE/TABLE?warehouse=W, iceberg+sqlite://PATH/catalog.db/NAMESPACE/TABLE?warehouse=DIR or mem://NAME";

/// Which of a pipeline's sinks is opened: its main sink, or a named output or dead letters.
#[derive(Debug, Clone, Copy)]
pub struct SinkRole<'a> {
    pub pipeline: &'a str,
    /// `None` for the main sink.
    pub output: Option<&'a str>,
}

/// Where a pipeline reads from: `stdin` or a URI.
pub async fn open_source(
    uri: &str,
    options: &SourceOptions,
    ctx: &Context,
) -> Result<Box<dyn Source>> {
    match uri.split_once("://").map(|(scheme, _)| scheme) {
        _ if uri == "stdin" || uri == "-" => Ok(Box::new(stdio::LineSource::stdin())),
        Some("kafka") => Ok(Box::new(
            kafka::KafkaSource::open(&kafka::KafkaUri::parse(uri)?, options, ctx).await?,
        )),
        Some("s3" | "file") => {
            let uri = object::ObjectUri::parse(uri)?;
            Ok(match uri.events {
                Some(_) => Box::new(object::EventSource::open(&uri, options, ctx).await?),
                None => {
                    Box::new(object::ObjectSource::open(&uri, options.state.clone(), ctx).await?)
                }
            })
        }
        Some("mem") => Ok(Box::new(mem::MemSource::open(uri, ctx)?)),
        _ => anyhow::bail!("unsupported source `{uri}`: use {SOURCES}"),
    }
}

/// The endpoints a source at `uri` reads through besides itself, which report their own health
/// (trouble, a consumer group not joined yet) under their URIs: an event-fed object source's
/// events topic. A URI that does not parse has none (opening it reports the error).
pub fn endpoints_behind(uri: &str) -> Vec<String> {
    match uri.split_once("://").map(|(scheme, _)| scheme) {
        Some("s3" | "file") => object::ObjectUri::parse(uri)
            .map(|u| u.events.into_iter().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Where a pipeline writes to: `stdout` or a URI. Open a pipeline's sinks before its source:
/// a sink that keeps positions registers itself for the source to find.
pub async fn open_sink(uri: &str, role: SinkRole<'_>, ctx: &Context) -> Result<Box<dyn Sink>> {
    match uri.split_once("://").map(|(scheme, _)| scheme) {
        _ if uri == "stdout" || uri == "-" => Ok(Box::new(stdio::StdoutSink::new())),
        Some("kafka") => Ok(Box::new(
            kafka::KafkaSink::open(&kafka::KafkaUri::parse(uri)?, ctx).await?,
        )),
        Some("s3" | "file") => Ok(Box::new(
            object::ObjectSink::open(&object::ObjectUri::parse(uri)?, ctx).await?,
        )),
        Some("iceberg" | "iceberg+sqlite") => {
            let writer = match role.output {
                None => role.pipeline.to_owned(),
                Some(output) => format!("{}.{output}", role.pipeline),
            };
            let uri = iceberg::IcebergUri::parse(uri)?;
            Ok(Box::new(
                iceberg::IcebergSink::open(&uri, role.pipeline, &writer, ctx).await?,
            ))
        }
        Some("mem") => Ok(Box::new(mem::MemSink::open(uri, ctx)?)),
        _ => anyhow::bail!("unsupported sink `{uri}`: use {SINKS}"),
    }
}

/// HTTP clients (opendal's, the Iceberg REST catalog's) need the process's TLS provider: rustls
/// with ring. Installing it again is refused harmlessly.
pub(crate) fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Call once every pipeline of the run has opened its endpoints: checks that the endpoints
/// linking pipelines (in-process topics) have both ends, and lets them end with their writers.
pub fn seal(ctx: &Context) -> Result<()> {
    mem::seal(ctx)
}

/// A URI as written in a pipelines file in `dir`: a relative local directory, the embedded
/// catalog's file and warehouse, and a `schema=` file are relative to the file; anything else
/// is unchanged.
pub fn relative_to(uri: &str, dir: &Path) -> String {
    let local = |path: &str| match path.starts_with('/') {
        true => path.to_owned(),
        false => dir.join(path).display().to_string(),
    };
    let (head, query) = uri.split_once('?').unwrap_or((uri, ""));
    let sqlite = head.starts_with("iceberg+sqlite://");
    let head = if let Some(path) = head.strip_prefix("file://") {
        format!("file://{}", local(path))
    } else if let Some(path) = head.strip_prefix("iceberg+sqlite://") {
        format!("iceberg+sqlite://{}", local(path))
    } else {
        head.to_owned()
    };
    let params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some(("warehouse", w)) if sqlite => format!("warehouse={}", local(w)),
            Some(("schema", f)) => format!("schema={}", local(f)),
            _ => p.to_owned(),
        })
        .collect();
    match params.is_empty() {
        true => head,
        false => format!("{head}?{}", params.join("&")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_in_a_pipelines_file_are_relative_to_it() {
        let dir = Path::new("/etc/stack");
        assert_eq!(
            relative_to("file://data?format=jsonl", dir),
            "file:///etc/stack/data?format=jsonl"
        );
        assert_eq!(relative_to("file:///abs", dir), "file:///abs");
        assert_eq!(
            relative_to(
                "iceberg+sqlite://../c.db/ns/t?warehouse=../wh&partition=day(ts)",
                dir
            ),
            "iceberg+sqlite:///etc/stack/../c.db/ns/t?warehouse=/etc/stack/../wh&partition=day(ts)"
        );
        assert_eq!(
            relative_to("kafka://h:1/t?group=g", dir),
            "kafka://h:1/t?group=g"
        );
        assert_eq!(
            relative_to("iceberg://h:1/ns/t?warehouse=w&schema=t.jsonl", dir),
            "iceberg://h:1/ns/t?warehouse=w&schema=/etc/stack/t.jsonl"
        );
        assert_eq!(
            relative_to("s3://b/p?schema=/abs/s.jsonl&format=jsonl", dir),
            "s3://b/p?schema=/abs/s.jsonl&format=jsonl"
        );
    }
}
