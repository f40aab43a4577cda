//! The record that flows through a pipeline.

use std::sync::Arc;

use bytes::Bytes;

/// One record. Bytes are reference-counted slices, so records decoded from one buffer share it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// Where the record came from (`stdin:LINE`, `mock.wasm@RUN#SEQ`, `topic/PARTITION@OFFSET`, `KEY#ROW`, ...). Outputs inherit the
    /// origin of the input they were made from, so errors can always name the source record.
    pub origin: Option<Arc<str>>,
    /// The named output a plugin routed this record to; `None` is the pipeline's sink.
    pub output: Option<String>,
}

impl Record {
    pub fn new(value: impl Into<Bytes>) -> Self {
        Record {
            value: value.into(),
            ..Default::default()
        }
    }

    /// How to name this record in a message.
    pub fn position(&self) -> &str {
        self.origin.as_deref().unwrap_or("(unknown position)")
    }
}
