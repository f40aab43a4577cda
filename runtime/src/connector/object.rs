//! Object storage endpoints (S3-compatible servers and local directories, through opendal).
//!
//! The sink rolls records into whole objects (by count, size and age) named after the source
//! position of their first record, so a replay overwrites instead of duplicating. The source
//! lists new objects under a prefix, emits their rows (one lane per object, so objects are
//! processed in parallel) and remembers durably which objects are done and how far a half-done
//! one got.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arrow_array::RecordBatch;
use bytes::Bytes;
use opendal::layers::{RetryInterceptor, RetryLayer};
use opendal::{ErrorKind, Operator};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{BoxFuture, RecordError, Rejected, Sink, Source, SourceBatch, Written};
use crate::format::{jsonl, parquet as pq};
use crate::record::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Parquet,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    fn reads(self, key: &str) -> bool {
        match self {
            Format::Jsonl => [".jsonl", ".ndjson", ".json"]
                .iter()
                .any(|e| key.ends_with(e)),
            Format::Parquet => key.ends_with(".parquet"),
        }
    }
}

/// `s3://BUCKET/PREFIX?...` or `file://DIR?...`, parsed.
#[derive(Debug, Clone)]
pub struct ObjectUri {
    /// The URI as given, without credentials, for messages.
    pub display: String,
    store: Store,
    /// Directory inside the bucket or root: empty or ending with `/`.
    pub prefix: String,
    pub format: Format,
    /// Sink: roll an object after this long, this many records or this many bytes.
    pub roll_after: Duration,
    pub roll_records: usize,
    pub roll_bytes: usize,
    /// Source: how often to list for new objects; whether to keep listing after the last one.
    pub poll: Duration,
    pub follow: bool,
    /// Source: whose progress this is (several pipelines may read one prefix).
    pub group: String,
    /// Parquet sink: example records (JSON lines) to take the columns from, instead of the
    /// first batch.
    pub schema: Option<PathBuf>,
}

#[derive(Debug, Clone)]
enum Store {
    S3 {
        bucket: String,
        endpoint: String,
        region: String,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        virtual_host: bool,
    },
    Dir(PathBuf),
}

const USAGE: &str = "use s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&format=parquet|jsonl \
                     or file://DIR?format=parquet|jsonl";

impl ObjectUri {
    pub fn parse(uri: &str) -> Result<Self> {
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| anyhow!("`{uri}` is not an object store URI: {USAGE}"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut params = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(k.to_owned(), percent_decode(v));
        }
        let mut take = |k: &str| params.remove(k);
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (store, prefix) = match scheme {
            "s3" => {
                let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
                if bucket.is_empty() {
                    bail!("`{uri}` names no bucket: {USAGE}");
                }
                let region = take("region")
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".to_owned());
                let endpoint = take("endpoint")
                    .or_else(|| env("AWS_ENDPOINT_URL"))
                    .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
                if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                    bail!("`{uri}`: endpoint `{endpoint}` must start with http:// or https://");
                }
                let store = Store::S3 {
                    bucket: bucket.to_owned(),
                    endpoint,
                    region,
                    access_key_id: take("access_key_id").or_else(|| env("AWS_ACCESS_KEY_ID")),
                    secret_access_key: take("secret_access_key")
                        .or_else(|| env("AWS_SECRET_ACCESS_KEY")),
                    virtual_host: take("path_style").is_some_and(|v| v == "false"),
                };
                (store, prefix.to_owned())
            }
            "file" => {
                if path.is_empty() {
                    bail!("`{uri}` names no directory: {USAGE}");
                }
                (Store::Dir(PathBuf::from(path)), String::new())
            }
            _ => bail!("`{uri}` is not an object store URI: {USAGE}"),
        };
        let format = match take("format").as_deref() {
            None | Some("jsonl") => Format::Jsonl,
            Some("parquet") => Format::Parquet,
            Some(other) => {
                bail!("`{uri}`: unknown format `{other}`: use format=parquet or format=jsonl")
            }
        };
        let duration = |k: &str, v: Option<String>, default: Duration| -> Result<Duration> {
            v.map_or(Ok(default), |v| {
                parse_duration(&v).ok_or_else(|| {
                    anyhow!(
                        "`{uri}`: {k}={v} is not a duration: use e.g. {k}=10s, {k}=500ms or {k}=2m"
                    )
                })
            })
        };
        let count = |k: &str, v: Option<String>, default: usize| -> Result<usize> {
            v.map_or(Ok(default), |v| {
                parse_size(&v).filter(|n| *n > 0).ok_or_else(|| {
                    anyhow!(
                        "`{uri}`: {k}={v} is not a positive number (e.g. {k}=10000 or {k}=64MiB)"
                    )
                })
            })
        };
        let roll_after = duration("roll", take("roll"), Duration::from_secs(10))?;
        let roll_records = count("roll_records", take("roll_records"), 100_000)?;
        let roll_bytes = count("roll_bytes", take("roll_bytes"), 64 << 20)?;
        let poll = duration("poll", take("poll"), Duration::from_secs(2))?;
        let follow = match take("follow").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => bail!("`{uri}`: follow={v}: use follow=true (keep listing) or follow=false (stop after the objects there now)"),
        };
        let group = take("group").unwrap_or_else(|| "sluice".to_owned());
        let schema = take("schema").map(PathBuf::from);
        if let Some(k) = params.keys().next() {
            bail!("`{uri}`: unknown parameter `{k}` (known: endpoint, region, access_key_id, secret_access_key, path_style, format, roll, roll_records, roll_bytes, poll, follow, group, schema)");
        }
        let mut prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        Ok(ObjectUri {
            display: uri.split('?').next().unwrap_or(uri).to_owned(),
            store,
            prefix,
            format,
            roll_after,
            roll_records,
            roll_bytes,
            poll,
            follow,
            group,
            schema,
        })
    }

    /// An operator with retries (bounded exponential backoff, logged); fails if the bucket or
    /// directory cannot be reached or read.
    async fn open(&self) -> Result<Operator> {
        let op = match &self.store {
            Store::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                virtual_host,
            } => {
                let (Some(id), Some(secret)) = (access_key_id, secret_access_key) else {
                    bail!(
                        "{}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                         (or access_key_id= and secret_access_key= in the URI)",
                        self.display
                    );
                };
                // Credentials come only from us: no config files, no cloud metadata endpoint.
                let mut b = opendal::services::S3::default()
                    .bucket(bucket)
                    .endpoint(endpoint)
                    .region(region)
                    .access_key_id(id)
                    .secret_access_key(secret)
                    .disable_config_load()
                    .disable_ec2_metadata();
                if *virtual_host {
                    b = b.enable_virtual_host_style();
                }
                Operator::new(b)?.finish()
            }
            Store::Dir(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("{}: cannot create {}", self.display, dir.display())
                })?;
                let root = dir
                    .canonicalize()
                    .with_context(|| format!("{}: cannot open {}", self.display, dir.display()))?;
                let root = root.to_string_lossy();
                // Files are written beside and renamed into place: never a partial file.
                Operator::new(
                    opendal::services::Fs::default()
                        .root(&root)
                        .atomic_write_dir(&format!("{root}/.sluice-tmp")),
                )?
                .finish()
            }
        };
        let display = self.display.clone();
        let op = op.layer(
            RetryLayer::new()
                .with_jitter()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(10)
                .with_notify(LogRetry(display)),
        );
        match op.list_with(&self.list_root()).limit(1).await {
            Ok(_) => Ok(op),
            Err(e) => Err(self.explain(e, "list")),
        }
    }

    fn list_root(&self) -> String {
        if self.prefix.is_empty() {
            "/".to_owned()
        } else {
            self.prefix.clone()
        }
    }

    /// An opendal error as one line naming the URI and what to do.
    fn explain(&self, e: opendal::Error, doing: &str) -> anyhow::Error {
        let text = e.to_string();
        let s3 = matches!(self.store, Store::S3 { .. });
        let hint = if s3 && text.contains("NoSuchBucket") {
            "the bucket does not exist: create it or fix the bucket name"
        } else if s3 && e.kind() == ErrorKind::PermissionDenied {
            "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        } else if text.contains("send http request") {
            "cannot reach the server (retried with backoff): is it running at that endpoint?"
        } else if e.kind() == ErrorKind::PermissionDenied {
            "permission denied"
        } else {
            "failed"
        };
        anyhow!("{}: {doing}: {hint} ({})", self.display, one_line(&e))
    }
}

/// The gist of an opendal error: the server's code and message, or the innermost cause.
fn one_line(e: &opendal::Error) -> String {
    let text = e.to_string();
    let field = |name: &str| {
        let start = text.find(&format!("{name}: \""))? + name.len() + 3;
        let len = text[start..].find('"')?;
        Some(&text[start..start + len])
    };
    if let (Some(code), Some(message)) = (field("code"), field("message")) {
        return format!("{code}: {message}");
    }
    let cause = text.rsplit("source: ").next().unwrap_or(&text);
    format!(
        "{}: {}",
        e.kind(),
        cause.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

struct LogRetry(String);

impl RetryInterceptor for LogRetry {
    fn intercept(&self, err: &opendal::Error, dur: Duration) {
        crate::metrics::count_store_retry(&self.0);
        tracing::warn!(uri = %self.0, "object store: {}; retrying in {:.1}s", one_line(err), dur.as_secs_f64());
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let (b'%', Some(Some(hi)), Some(Some(lo))) = (
            b[i],
            b.get(i + 1).map(|&c| hex(c)),
            b.get(i + 2).map(|&c| hex(c)),
        ) {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `10s`, `500ms`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// `10000`, `64MiB`, `512KiB`, `1GiB`, `10k`, `1M`.
fn parse_size(s: &str) -> Option<usize> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: usize = n.parse().ok()?;
    let m = match unit {
        "" => 1,
        "k" => 1000,
        "M" => 1_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(m)
}

/// The object name for records starting at `position`: key-safe characters only, and digit runs
/// padded so names sort like positions.
fn object_name(position: &str) -> String {
    let mut out = String::with_capacity(position.len() + 16);
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            out.push_str(&format!("{:0>12}", digits));
            digits.clear();
        }
    };
    for c in position.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        flush(&mut digits, &mut out);
        out.push(if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '-'
        });
    }
    flush(&mut digits, &mut out);
    out.trim_matches('-').to_owned()
}

// ---------------------------------------------------------------------------------------------
// Sink

/// Set when the process stops: objects are written at once instead of at their roll time, so
/// pipelines waiting on them (through mem:// topics) finish quickly.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn roll_now() {
    STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Objects being uploaded at once per worker; more waits (backpressure).
const UPLOADS_PER_WORKER: usize = 2;
/// Objects larger than this are uploaded in parts (multipart upload on S3).
const MULTIPART_ABOVE: usize = 16 << 20;
const PART_SIZE: usize = 8 << 20;

pub struct ObjectSink {
    shared: Arc<SinkShared>,
    pending: Arc<tokio::sync::Mutex<Pending>>,
    /// Dropped with the sink: tells its roller to write what is pending and stop.
    _open: mpsc::Sender<()>,
}

struct SinkShared {
    uri: ObjectUri,
    op: Operator,
    /// One column layout for every object this sink writes (inferred from the first records).
    columns: Mutex<pq::ColumnEncoder>,
    uploads: Semaphore,
}

#[derive(Default)]
struct Pending {
    first_position: Option<String>,
    jsonl: Vec<u8>,
    batches: Vec<RecordBatch>,
    records: usize,
    bytes: usize,
    opened: Option<Instant>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

impl ObjectSink {
    pub async fn open(uri: &ObjectUri) -> Result<Self> {
        let columns = match &uri.schema {
            None => pq::ColumnEncoder::default(),
            Some(path) => {
                let examples = std::fs::read(path).with_context(|| {
                    format!(
                        "{}: cannot read the schema examples {}",
                        uri.display,
                        path.display()
                    )
                })?;
                pq::ColumnEncoder::from_examples(&examples)
                    .map_err(|e| anyhow!("{}: schema {}: {e}", uri.display, path.display()))?
            }
        };
        let op = uri.open().await?;
        let shared = Arc::new(SinkShared {
            uri: uri.clone(),
            op,
            columns: Mutex::new(columns),
            uploads: Semaphore::new(UPLOADS_PER_WORKER),
        });
        Ok(Self::with(shared))
    }

    fn with(shared: Arc<SinkShared>) -> Self {
        let pending = Arc::new(tokio::sync::Mutex::new(Pending::default()));
        let (open, mut closed) = mpsc::channel::<()>(1);
        let (roller_shared, roller_pending) = (shared.clone(), pending.clone());
        // Rolls objects by age even when no records arrive, and writes the last one when the
        // sink is dropped.
        tokio::spawn(async move {
            let tick = (roller_shared.uri.roll_after / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = closed.recv() => break,
                    _ = tokio::time::sleep(tick) => {}
                }
                let mut p = roller_pending.lock().await;
                let due = |t: Instant| {
                    STOPPING.load(std::sync::atomic::Ordering::Relaxed)
                        || t.elapsed() >= roller_shared.uri.roll_after
                };
                if p.opened.is_some_and(due) {
                    let full = std::mem::take(&mut *p);
                    drop(p);
                    upload(roller_shared.clone(), full).await;
                }
            }
            let last = std::mem::take(&mut *roller_pending.lock().await);
            upload(roller_shared, last).await;
        });
        ObjectSink {
            shared,
            pending,
            _open: open,
        }
    }
}

/// Writes one object whole and tells every batch in it how that went. Runs on its own task so
/// the worker goes on; at most UPLOADS_PER_WORKER at once.
async fn upload(shared: Arc<SinkShared>, p: Pending) {
    if p.records == 0 {
        for w in p.waiters {
            let _ = w.send(Ok(()));
        }
        return;
    }
    let Ok(permit) = shared.uploads.acquire().await else {
        return;
    };
    let name = object_name(p.first_position.as_deref().unwrap_or("records"));
    let key = format!(
        "{}{name}.{}",
        shared.uri.prefix,
        shared.uri.format.extension()
    );
    let result = async {
        let body = match shared.uri.format {
            Format::Jsonl => p.jsonl,
            Format::Parquet => {
                let schema = shared
                    .columns
                    .lock()
                    .map_err(|_| "column encoder poisoned".to_owned())?
                    .schema()
                    .cloned()
                    .ok_or("no columns")?;
                let batches = p.batches;
                tokio::task::spawn_blocking(move || pq::write_file(&schema, &batches))
                    .await
                    .map_err(|e| e.to_string())??
            }
        };
        let size = body.len();
        let written = if size > MULTIPART_ABOVE {
            async {
                let mut w = shared.op.writer_with(&key).chunk(PART_SIZE).concurrent(2).await?;
                w.write(body).await?;
                w.close().await.map(drop)
            }
            .await
        } else {
            shared.op.write(&key, body).await.map(drop)
        };
        written.map_err(|e| shared.uri.explain(e, &format!("write {key}")).to_string())?;
        tracing::info!(uri = %shared.uri.display, key, records = p.records, bytes = size, "object written");
        Ok::<_, String>(())
    }
    .await;
    drop(permit);
    if let Err(e) = &result {
        tracing::error!("{e}");
    }
    for w in p.waiters {
        let _ = w.send(result.clone());
    }
}

impl Sink for ObjectSink {
    fn write<'a>(&'a mut self, records: &'a [Record]) -> BoxFuture<'a, Result<Written>> {
        Box::pin(async move {
            let mut rejected = Vec::new();
            let mut added = 0usize;
            let mut p = self.pending.lock().await;
            let first_kept;
            match self.shared.uri.format {
                Format::Jsonl => {
                    let before = p.jsonl.len();
                    let mut first = None;
                    for (i, r) in records.iter().enumerate() {
                        match jsonl::write_line(&r.value, &mut p.jsonl) {
                            Ok(()) => {
                                first.get_or_insert(i);
                                added += 1;
                            }
                            Err(message) => rejected.push(Rejected { index: i, message }),
                        }
                    }
                    p.bytes += p.jsonl.len() - before;
                    first_kept = first;
                }
                Format::Parquet => {
                    let values: Vec<&[u8]> = records.iter().map(|r| &r.value[..]).collect();
                    let (batch, misfits) = self
                        .shared
                        .columns
                        .lock()
                        .map_err(|_| anyhow!("column encoder poisoned"))?
                        .encode(&values);
                    let mut fits = vec![true; records.len()];
                    misfits.iter().for_each(|m| fits[m.0] = false);
                    first_kept = fits.iter().position(|&f| f);
                    rejected.extend(
                        misfits
                            .into_iter()
                            .map(|(index, message)| Rejected { index, message }),
                    );
                    if let Some(batch) = batch {
                        added = batch.num_rows();
                        p.bytes += batch.get_array_memory_size();
                        p.batches.push(batch);
                    }
                }
            }
            if added == 0 {
                return Ok(Written::done(rejected));
            }
            if p.first_position.is_none() {
                p.first_position = first_kept.map(|i| records[i].position().to_owned());
                p.opened = Some(Instant::now());
            }
            p.records += added;
            let (tx, rx) = oneshot::channel();
            p.waiters.push(tx);
            let uri = &self.shared.uri;
            if p.records >= uri.roll_records || p.bytes >= uri.roll_bytes {
                let full = std::mem::take(&mut *p);
                drop(p);
                // Wait for an upload slot here, so a slow store slows the pipeline down.
                let permit = self.shared.uploads.acquire().await?;
                drop(permit);
                tokio::spawn(upload(self.shared.clone(), full));
            }
            let display = uri.display.clone();
            Ok(Written {
                rejected,
                durable: Box::pin(async move {
                    match rx.await {
                        Ok(result) => result.map_err(|e| anyhow!(e)),
                        Err(_) => Err(anyhow!("{display}: the object writer stopped")),
                    }
                }),
            })
        })
    }

    fn fork(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(Self::with(self.shared.clone())))
    }

    fn max_unacked_batches(&self) -> usize {
        // Acks wait for a whole object: let enough batches wait to fill one.
        4096
    }
}

// ---------------------------------------------------------------------------------------------
// Source

/// Which objects are done, and how many rows of half-done ones are acknowledged.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub done: BTreeSet<String>,
    pub partial: BTreeMap<String, u64>,
}

/// Where progress is kept: an object beside the data, or a local file (`--state`).
#[derive(Clone)]
enum ProgressStore {
    Object { op: Operator, key: String },
    File(PathBuf),
}

impl ProgressStore {
    async fn load(&self) -> Result<Progress> {
        let bytes = match self {
            ProgressStore::Object { op, key } => match op.read(key).await {
                Ok(b) => b.to_vec(),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Progress::default()),
                Err(e) => return Err(anyhow!("cannot read progress {key}: {}", one_line(&e))),
            },
            ProgressStore::File(path) => match std::fs::read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Progress::default())
                }
                Err(e) => bail!("cannot read the state file {}: {e}", path.display()),
            },
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow!(
                "the progress in {} is not valid ({e}): fix or delete it (deleting re-reads every object)",
                self
            )
        })
    }

    async fn save(&self, progress: &Progress) -> Result<()> {
        let body = serde_json::to_vec(progress)?;
        match self {
            ProgressStore::Object { op, key } => op
                .write(key, body)
                .await
                .map(drop)
                .map_err(|e| anyhow!("cannot save progress {key}: {}", one_line(&e))),
            ProgressStore::File(path) => {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, body)
                    .and_then(|_| std::fs::rename(&tmp, path))
                    .with_context(|| format!("cannot save the state file {}", path.display()))
            }
        }
    }
}

impl std::fmt::Display for ProgressStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgressStore::Object { key, .. } => write!(f, "object {key}"),
            ProgressStore::File(p) => write!(f, "{}", p.display()),
        }
    }
}

struct Tracker {
    progress: Mutex<Progress>,
    dirty: std::sync::atomic::AtomicBool,
    store: ProgressStore,
}

impl Tracker {
    fn acked(&self, key: &str, rows_done: u64, finished: bool) {
        let Ok(mut p) = self.progress.lock() else {
            return;
        };
        if finished {
            p.partial.remove(key);
            p.done.insert(key.to_owned());
        } else {
            p.partial.insert(key.to_owned(), rows_done);
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    async fn save_if_dirty(&self) -> Result<()> {
        if !self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = self
            .progress
            .lock()
            .map_err(|_| anyhow!("progress lock poisoned"))?
            .clone();
        let saved = self.store.save(&snapshot).await;
        if saved.is_err() {
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
        }
        saved
    }
}

/// Progress is saved this often (and at the end): a crash re-reads at most this much.
const SAVE_EVERY: Duration = Duration::from_secs(1);

enum Rows {
    Parquet(pq::ParquetRows),
    Jsonl { data: Bytes, at: usize, line: u64 },
}

struct OpenObject {
    key: Arc<str>,
    /// The same key as record keys: one buffer shared by every row.
    key_bytes: Bytes,
    lane: u32,
    rows: Option<Rows>,
    /// Rows (records and bad rows) handed out so far.
    next_row: u64,
    ahead: VecDeque<Bytes>,
    /// Decoded but not yet handed out error, ending the rows before it.
    error: Option<(u64, String)>,
}

pub struct ObjectSource {
    uri: ObjectUri,
    op: Operator,
    tracker: Arc<Tracker>,
    queue: VecDeque<String>,
    seen: HashSet<String>,
    current: Option<OpenObject>,
    lanes: u32,
    last_list: Option<Instant>,
    saver: tokio::task::JoinHandle<()>,
    /// Objects opened and rows handed out, for the progress line of long backfills.
    opened: u64,
    rows: u64,
    last_progress: Instant,
}

/// How often (at most; and every 100 objects) a source with a backlog says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl ObjectSource {
    pub async fn open(uri: &ObjectUri, state: Option<PathBuf>) -> Result<Self> {
        let op = uri.open().await?;
        let store = match state {
            Some(path) => ProgressStore::File(path),
            None => ProgressStore::Object {
                op: op.clone(),
                key: format!("{}_sluice/{}.progress.json", uri.prefix, uri.group),
            },
        };
        let progress = store.load().await.with_context(|| uri.display.clone())?;
        tracing::info!(uri = %uri.display, progress = %store, done = progress.done.len(), partial = progress.partial.len(), "object source ready");
        let tracker = Arc::new(Tracker {
            progress: Mutex::new(progress),
            dirty: false.into(),
            store,
        });
        let saver_tracker = tracker.clone();
        let saver = tokio::spawn(async move {
            loop {
                tokio::time::sleep(SAVE_EVERY).await;
                if let Err(e) = saver_tracker.save_if_dirty().await {
                    tracing::warn!("{e:#}; will retry");
                }
            }
        });
        Ok(ObjectSource {
            uri: uri.clone(),
            op,
            tracker,
            queue: VecDeque::new(),
            seen: HashSet::new(),
            current: None,
            lanes: 0,
            last_list: None,
            saver,
            opened: 0,
            rows: 0,
            last_progress: Instant::now(),
        })
    }

    /// Lists the prefix and queues objects not done yet, in key order. Keys under a folder (or
    /// with a name) starting with `_` or `.` are bookkeeping (ours, Spark's `_SUCCESS`...).
    async fn list(&mut self) -> Result<()> {
        let entries = self
            .op
            .list_with(&self.uri.list_root())
            .recursive(true)
            .await
            .map_err(|e| self.uri.explain(e, "list"))?;
        let done = &self
            .tracker
            .progress
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .done;
        let mut new: Vec<String> = entries
            .into_iter()
            .filter(|e| e.metadata().mode().is_file())
            .map(|e| e.path().trim_start_matches('/').to_owned())
            .filter(|k| {
                let rel = k.strip_prefix(&self.uri.prefix).unwrap_or(k);
                !rel.split('/')
                    .any(|part| part.starts_with('_') || part.starts_with('.'))
                    && self.uri.format.reads(k)
                    && !done.contains(k)
                    && !self.seen.contains(k)
            })
            .collect();
        new.sort();
        if !new.is_empty() {
            tracing::info!(uri = %self.uri.display, new = new.len(), "new objects");
        }
        for k in new {
            self.seen.insert(k.clone());
            self.queue.push_back(k);
        }
        Ok(())
    }

    async fn open_object(&mut self, key: String) -> Result<OpenObject> {
        let skip = self
            .tracker
            .progress
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .partial
            .get(&key)
            .copied()
            .unwrap_or(0);
        let lane = self.lanes;
        self.lanes = self.lanes.wrapping_add(1);
        let data = self
            .op
            .read(&key)
            .await
            .map_err(|e| self.uri.explain(e, &format!("read {key}")))?
            .to_bytes();
        let mut object = OpenObject {
            key: Arc::from(key.as_str()),
            key_bytes: Bytes::from(key.clone()),
            lane,
            rows: None,
            next_row: 0,
            ahead: VecDeque::new(),
            error: None,
        };
        match self.uri.format {
            Format::Parquet => match pq::ParquetRows::open(data) {
                Ok(rows) => object.rows = Some(Rows::Parquet(rows)),
                Err(e) => object.error = Some((0, e)),
            },
            Format::Jsonl => {
                object.rows = Some(Rows::Jsonl {
                    data,
                    at: 0,
                    line: 0,
                })
            }
        }
        if skip > 0 {
            tracing::info!(key, rows = skip, "resuming a half-done object");
            while object.next_row < skip {
                object.fill(1);
                if object.ahead.pop_front().is_none() && object.error.take().is_none() {
                    break;
                }
                object.next_row += 1;
            }
        }
        Ok(object)
    }
}

impl OpenObject {
    /// Decodes until `want` rows are ahead, an error is found or the object ends.
    fn fill(&mut self, want: usize) {
        while self.ahead.len() < want && self.error.is_none() {
            let row = self.next_row + self.ahead.len() as u64;
            match &mut self.rows {
                None => return,
                Some(Rows::Parquet(rows)) => match rows.next_rows() {
                    Some(Ok(batch)) => self.ahead.extend(batch),
                    Some(Err(e)) => {
                        self.error = Some((row, e));
                        self.rows = None;
                    }
                    None => self.rows = None,
                },
                Some(Rows::Jsonl { data, at, line }) => {
                    if *at >= data.len() {
                        self.rows = None;
                        return;
                    }
                    let end = data[*at..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |n| *at + n);
                    let text = data.slice(*at..end);
                    *at = end + 1;
                    *line += 1;
                    let trimmed = text.trim_ascii();
                    if trimmed.is_empty() {
                        continue;
                    }
                    match jsonl::validate(trimmed) {
                        Ok(()) => self.ahead.push_back(text),
                        Err(e) => self.error = Some((row, format!("line {line}: {e}"))),
                    }
                }
            }
        }
    }

    fn finished(&self) -> bool {
        self.rows.is_none() && self.ahead.is_empty() && self.error.is_none()
    }
}

impl Source for ObjectSource {
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(async move {
            loop {
                if let Some(object) = &mut self.current {
                    object.fill(max);
                    let n = object.ahead.len().min(max);
                    let first = object.next_row;
                    let records: Vec<Record> = object
                        .ahead
                        .drain(..n)
                        .enumerate()
                        .map(|(i, value)| Record {
                            key: Some(object.key_bytes.clone()),
                            value,
                            origin: Some(Arc::from(format!("{}#{}", object.key, first + i as u64))),
                            ..Default::default()
                        })
                        .collect();
                    object.next_row += n as u64;
                    self.rows += n as u64;
                    // An error is handed out once the rows before it are.
                    let error = if object.ahead.is_empty() {
                        object.error.take().map(|(row, message)| {
                            object.next_row += 1;
                            RecordError {
                                position: format!("{}#{row}", object.key),
                                message: format!("{}: {message}", self.uri.display),
                            }
                        })
                    } else {
                        None
                    };
                    if error.is_none() {
                        object.fill(1); // to know whether this batch is the object's last
                    }
                    let finished = object.finished();
                    let (key, rows_done, lane) = (object.key.clone(), object.next_row, object.lane);
                    if finished {
                        self.current = None;
                    }
                    let tracker = self.tracker.clone();
                    return Ok(Some(SourceBatch {
                        records,
                        error,
                        lane,
                        ack: Some(Box::new(move || tracker.acked(&key, rows_done, finished))),
                    }));
                }
                if let Some(key) = self.queue.pop_front() {
                    self.current = Some(self.open_object(key).await?);
                    self.opened += 1;
                    if self.last_progress.elapsed() >= PROGRESS_EVERY
                        || self.opened.is_multiple_of(100)
                    {
                        self.last_progress = Instant::now();
                        tracing::info!(uri = %self.uri.display, objects_read = self.opened, objects_left = self.queue.len(), rows_read = self.rows, "progress");
                    }
                    continue;
                }
                if let Some(t) = self.last_list {
                    if !self.uri.follow {
                        return Ok(None);
                    }
                    let wait = self.uri.poll.saturating_sub(t.elapsed());
                    tokio::time::sleep(wait).await;
                }
                self.last_list = Some(Instant::now());
                self.list().await?;
            }
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.saver.abort();
            self.tracker.save_if_dirty().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_positions() {
        assert_eq!(
            object_name("user_sessions/3@1200"),
            "user_sessions-000000000003-000000001200"
        );
        assert_eq!(
            object_name("mock.wasm@1795617320123#9"),
            "mock-wasm-1795617320123-000000000009"
        );
        assert!(object_name("t/0@9") < object_name("t/0@10"));
    }

    #[test]
    fn uris() {
        let u = ObjectUri::parse("s3://bucket/raw/data?endpoint=http://127.0.0.1:9000&format=parquet&roll=10s&access_key_id=a&secret_access_key=b").unwrap();
        assert_eq!(u.prefix, "raw/data/");
        assert_eq!(u.format, Format::Parquet);
        assert_eq!(u.roll_after, Duration::from_secs(10));
        assert_eq!(u.display, "s3://bucket/raw/data");
        let e = ObjectUri::parse("s3://b?format=csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("use format=parquet or format=jsonl"), "{e}");
        let e = ObjectUri::parse("s3://b?roll=soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("roll=soon is not a duration"), "{e}");
        let e = ObjectUri::parse("s3://b?rol=1s").unwrap_err().to_string();
        assert!(e.contains("unknown parameter `rol`"), "{e}");
        let e = ObjectUri::parse("s3:///x").unwrap_err().to_string();
        assert!(e.contains("names no bucket"), "{e}");
        let e = ObjectUri::parse("s3://b?endpoint=127.0.0.1:9000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must start with http://"), "{e}");
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(percent_decode("a%2Fb%3d"), "a/b=");
    }
}
