//! `--on-error dlq`: failed input records go, unchanged, to a dead-letter endpoint with where
//! and why they failed. On Kafka the provenance travels in headers; on other sinks (objects,
//! stdout), which keep only values, each dead letter is a JSON envelope holding the same
//! fields and the original value.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use bytes::Bytes;

use crate::connector::{Refusals, Sink, Written};
use crate::failure::Failure;
use crate::record::{Origin, Record};

pub(crate) const PIPELINE: &str = "sluice-pipeline";
pub(crate) const PLUGIN: &str = "sluice-plugin";
pub(crate) const VERSION: &str = "sluice-plugin-version";
pub(crate) const ERROR: &str = "sluice-error";
pub(crate) const POSITION: &str = "sluice-position";
pub(crate) const TIME: &str = "sluice-failed-at-ms";

pub(crate) struct DeadLetters {
    pipeline: Arc<str>,
    sink: Box<dyn Sink>,
    /// The sink keeps values only (not Kafka): wrap each dead letter in a JSON envelope.
    envelope: bool,
}

impl DeadLetters {
    /// Dead letters of `pipeline`, written to `sink`.
    pub(crate) fn new(pipeline: &str, sink: Box<dyn Sink>) -> Self {
        let envelope = !sink.keeps_headers();
        DeadLetters {
            pipeline: pipeline.into(),
            sink,
            envelope,
        }
    }

    pub(crate) fn fork(&self) -> Result<DeadLetters> {
        Ok(DeadLetters {
            pipeline: self.pipeline.clone(),
            sink: self.sink.fork()?,
            envelope: self.envelope,
        })
    }

    /// See [`Sink::keeps_write_order`].
    pub(crate) fn keeps_write_order(&self) -> bool {
        self.sink.keeps_write_order()
    }

    /// See [`Sink::max_unacked_batches`].
    pub(crate) fn max_unacked_batches(&self) -> usize {
        self.sink.max_unacked_batches()
    }

    /// Writes the inputs behind `failures` (found in `inputs` by position; an input that never
    /// decoded becomes an empty value) as dead letters.
    pub(crate) async fn write(
        &mut self,
        failures: &[Failure],
        inputs: &[Record],
    ) -> Result<Written> {
        let by_position: HashMap<String, &Record> =
            inputs.iter().map(|r| (r.position(), r)).collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let letters: Vec<Record> = failures
            .iter()
            .map(|f| {
                let mut r = by_position
                    .get(f.position.as_str())
                    .map(|r| (*r).clone())
                    .unwrap_or_default();
                let (plugin, version) = f
                    .plugin
                    .as_ref()
                    .map_or((String::new(), String::new()), |(n, v)| {
                        (n.to_string(), v.clone())
                    });
                let provenance = [
                    (PIPELINE, self.pipeline.to_string()),
                    (PLUGIN, plugin),
                    (VERSION, version),
                    (ERROR, f.message.clone()),
                    (POSITION, f.position.clone()),
                    (TIME, now.to_string()),
                ];
                if self.envelope {
                    let value = serde_json::from_slice::<serde_json::Value>(&r.value)
                        .unwrap_or_else(|_| {
                            serde_json::Value::String(
                                String::from_utf8_lossy(&r.value).into_owned(),
                            )
                        });
                    let mut env: serde_json::Map<String, serde_json::Value> = provenance
                        .iter()
                        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
                        .collect();
                    env.insert("value".into(), value);
                    r.value = Bytes::from(serde_json::Value::Object(env).to_string());
                } else {
                    r.headers.extend(
                        provenance
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), Bytes::from(v))),
                    );
                }
                r.origin = Some(Origin::from(f.position.as_str()));
                r.output = None;
                r
            })
            .collect();
        let written = self.sink.write(&letters, Refusals::WriteTheRest).await?;
        if let Some(r) = written.rejected.first() {
            anyhow::bail!(
                "the dead-letter endpoint refused the record {}: {}",
                letters[r.index].position(),
                r.message
            );
        }
        Ok(written)
    }
}
