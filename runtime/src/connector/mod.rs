//! Endpoints: where records come from and go to. One file per kind; a new kind is a new file
//! plus one arm in [`open_source`] / [`open_sink`].

pub mod generator;
pub mod stdio;

use std::future::Future;
use std::pin::Pin;

use anyhow::Result;

use crate::record::Record;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A record the source could not decode; it ends the batch it would have been part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub position: String,
    pub message: String,
}

/// Records read from a source, in order; `error`, if any, is the input right after them.
#[derive(Debug, Default)]
pub struct SourceBatch {
    pub records: Vec<Record>,
    pub error: Option<RecordError>,
}

pub trait Source: Send {
    /// Up to `max` records. Returns what is available rather than waiting for a full batch;
    /// `None` at the end of the input.
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>>;
}

/// A record a sink refused to write, and why.
#[derive(Debug)]
pub struct Rejected {
    pub index: usize,
    pub message: String,
}

/// The sink's reader went away (e.g. `runtime run ... | head`): a normal end, not a failure.
#[derive(Debug, thiserror::Error)]
#[error("the sink was closed by its reader")]
pub struct SinkClosed;

pub trait Sink: Send {
    /// Writes the records and makes them durable (for stdout: flushed). Records the sink cannot
    /// represent are left out and returned.
    fn write<'a>(&'a mut self, records: &'a [Record]) -> BoxFuture<'a, Result<Vec<Rejected>>>;
}
