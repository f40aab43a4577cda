//! `s3://BUCKET/PREFIX?...` and `file://DIR?...`: parsing, opening the store (with retries),
//! and errors that name the URI and the fix.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use opendal::layers::{RetryEvent, RetryInterceptor, RetryLayer};
use opendal::{ErrorKind, Operator};

use super::{gist, Format};
use crate::connector::uri::Query;
use crate::context::{Context, EndpointMetrics};
use crate::health::{Cause, Health};

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
    /// Source: read the objects named by object-created events from this Kafka topic
    /// (`kafka://HOST:PORT/TOPIC?group=GROUP&prop...`, built from `events=`, `group=` and the
    /// `prop.`s), instead of listing.
    pub events: Option<String>,
    /// Source (`list=events`): list, and publish one object-created event per object instead
    /// of its rows.
    pub list_events: bool,
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
                     (sources also take events=kafka://HOST:PORT/TOPIC or list=events) \
                     or file://DIR?format=parquet|jsonl";

impl ObjectUri {
    pub fn parse(uri: &str) -> Result<Self> {
        let (path, mut query) = Query::parse(uri, USAGE)?;
        let Some((scheme, path)) = path.split_once("://") else {
            bail!("`{uri}` is not an object store URI: {USAGE}");
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (store, prefix) = match scheme {
            "s3" => {
                let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
                if bucket.is_empty() {
                    bail!("`{uri}` names no bucket: {USAGE}");
                }
                let region = query
                    .take("region")
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".to_owned());
                let endpoint = query
                    .take("endpoint")
                    .or_else(|| env("AWS_ENDPOINT_URL"))
                    .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
                if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                    bail!("`{uri}`: endpoint `{endpoint}` must start with http:// or https://");
                }
                let store = Store::S3 {
                    bucket: bucket.to_owned(),
                    endpoint,
                    region,
                    access_key_id: query
                        .take("access_key_id")
                        .or_else(|| env("AWS_ACCESS_KEY_ID")),
                    secret_access_key: query
                        .take("secret_access_key")
                        .or_else(|| env("AWS_SECRET_ACCESS_KEY")),
                    virtual_host: !query.flag(
                        "path_style",
                        true,
                        "path_style=true (bucket in the path, for MinIO-like servers) or \
                         path_style=false (bucket in the host name)",
                    )?,
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
        let format = match query.take("format").as_deref() {
            None | Some("jsonl") => Format::Jsonl,
            Some("parquet") => Format::Parquet,
            Some(other) => {
                bail!("`{uri}`: unknown format `{other}`: use format=parquet or format=jsonl")
            }
        };
        let roll_after = query.duration("roll", Duration::from_secs(10))?;
        let roll_records = query.size("roll_records", 100_000)?;
        let roll_bytes = query.size("roll_bytes", 64 << 20)?;
        let poll = query.duration("poll", Duration::from_secs(2))?;
        let follow = query.flag(
            "follow",
            true,
            "follow=true (keep listing) or follow=false (stop after the objects there now)",
        )?;
        let group = query.take("group").unwrap_or_else(|| "sluice".to_owned());
        let schema = query.take("schema").map(PathBuf::from);
        let list_events = match query.take("list").as_deref() {
            None => false,
            Some("events") => true,
            Some(other) => {
                return Err(query.error(format!(
                    "list={other}: use list=events (publish an event per object) or leave it out"
                )))
            }
        };
        let events = match query.take("events") {
            None => None,
            Some(events) => Some(super::events::consumer_uri(&events, &group, &mut query)?),
        };
        if events.is_some() && list_events {
            return Err(query.error(
                "events= (read objects named by events) and list=events (publish events) \
                 are two different jobs: give one",
            ));
        }
        if (events.is_some() || list_events) && !matches!(store, Store::S3 { .. }) {
            return Err(query.error("object events name a bucket: use an s3:// URI"));
        }
        query.finish("endpoint, region, access_key_id, secret_access_key, path_style, format, roll, roll_records, roll_bytes, poll, follow, group, schema, events, list, prop.NAME (with events=)")?;
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
            events,
            list_events,
        })
    }

    /// The bucket of an `s3://` URI.
    pub fn bucket(&self) -> Option<&str> {
        match &self.store {
            Store::S3 { bucket, .. } => Some(bucket),
            Store::Dir(_) => None,
        }
    }

    /// The region of an `s3://` URI (empty for a directory).
    pub fn region(&self) -> &str {
        match &self.store {
            Store::S3 { region, .. } => region,
            Store::Dir(_) => "",
        }
    }

    /// An operator with retries (bounded exponential backoff, logged); fails if the bucket or
    /// directory cannot be reached or read.
    pub(crate) async fn open(&self, ctx: &Context) -> Result<Operator> {
        // Every operator (local directories too) builds opendal's HTTP client.
        crate::connector::install_tls_provider();
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
                .with_notify(LogRetry {
                    uri: display,
                    metrics: ctx.endpoints.clone(),
                    health: ctx.health.clone(),
                }),
        );
        match op.list_with(&self.list_root()).limit(1).await {
            Ok(_) => Ok(op),
            Err(e) => Err(self.explain(e, "list")),
        }
    }

    /// Whether a key is one of this source's objects: under the prefix, of its format, and not
    /// bookkeeping (a folder or name starting with `_` or `.`: ours, Spark's `_SUCCESS`...).
    pub(super) fn wants(&self, key: &str) -> bool {
        let Some(rel) = key.strip_prefix(&self.prefix) else {
            return false;
        };
        !rel.split('/')
            .any(|part| part.starts_with('_') || part.starts_with('.'))
            && self.format.reads(key)
    }

    pub(super) fn list_root(&self) -> String {
        if self.prefix.is_empty() {
            "/".to_owned()
        } else {
            self.prefix.clone()
        }
    }

    /// An opendal error as one line naming the URI and what to do.
    pub(super) fn explain(&self, e: opendal::Error, doing: &str) -> anyhow::Error {
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
        anyhow!("{}: {doing}: {hint} ({})", self.display, gist(&e))
    }
}

/// Logs and counts each retried object store request.
struct LogRetry {
    uri: String,
    metrics: Arc<EndpointMetrics>,
    health: Arc<Health>,
}

impl RetryInterceptor for LogRetry {
    fn intercept(&self, event: RetryEvent<'_>) {
        let err = gist(event.err);
        self.metrics.count_store_retry(&self.uri);
        tracing::warn!(uri = %self.uri, attempt = event.attempt, "object store: {err}; retrying in {:.1}s", event.retry_after.as_secs_f64());
        self.health.trouble(&self.uri, Cause::Unreachable, err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = ObjectUri::parse("s3://b?path_style=maybe")
            .unwrap_err()
            .to_string();
        assert!(e.contains("path_style=maybe: use path_style=true"), "{e}");
    }

    #[test]
    fn event_uris() {
        let u = ObjectUri::parse("s3://raw/in?format=parquet&events=kafka://127.0.0.1:9092/object-events&group=ingest&prop.session.timeout.ms=6000").unwrap();
        assert_eq!(
            u.events.as_deref(),
            Some("kafka://127.0.0.1:9092/object-events?group=ingest&prop.auto.commit.interval.ms=100&prop.session.timeout.ms=6000")
        );
        assert_eq!((u.bucket(), u.prefix.as_str()), (Some("raw"), "in/"));
        assert!(
            ObjectUri::parse("s3://raw?list=events")
                .unwrap()
                .list_events
        );
        for (uri, why) in [
            ("s3://b?list=all", "list=all: use list=events"),
            (
                "s3://b?events=http://h:1/t",
                "events=kafka://HOST:PORT/TOPIC",
            ),
            ("s3://b?events=kafka://h:1/t?group=g", "group=NAME"),
            ("s3://b?events=kafka://h/t", "HOST:PORT"),
            (
                "s3://b?events=kafka://h:1/t&list=events",
                "two different jobs",
            ),
            ("file:///tmp/x?list=events", "use an s3:// URI"),
            ("s3://b?prop.a=b", "unknown parameter `prop.a`"),
        ] {
            let e = ObjectUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(why), "{uri}: {e}");
        }
    }
}
