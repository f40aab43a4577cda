//! What the next commit appends: data files being written as batches arrive, the batches
//! themselves (so the files can be written again when the store failed mid-way: nothing is
//! acknowledged before its commit lands, so nothing may be lost before either), the source
//! positions they cover and the writers waiting for the commit.
//!
//! Parquet encoding and uploads run in a task of their own ([`Encoding`]): a batch is handed
//! over and the sink takes the next one while it is encoded, so workers never wait for it.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{anyhow, Result};
use arrow_array::RecordBatch;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use super::table::FileWriter;

/// A file writer in a task of its own, fed batches in order. It stops at its first error,
/// which [`Encoding::close`] returns.
struct Encoding {
    batches: mpsc::UnboundedSender<RecordBatch>,
    files: AbortOnDropHandle<Result<Vec<DataFile>>>,
}

impl Encoding {
    fn start(mut writer: FileWriter) -> Self {
        // Unbounded: every batch sent is also kept in its segment, and those are bounded in
        // bytes by `max_pending`.
        let (batches, mut next) = mpsc::unbounded_channel::<RecordBatch>();
        let files = AbortOnDropHandle::new(tokio::spawn(async move {
            while let Some(batch) = next.recv().await {
                writer.write(batch).await?;
            }
            writer.close().await
        }));
        Encoding { batches, files }
    }

    fn write(&self, batch: RecordBatch) {
        // A send fails only once the task stopped at an error, which `close` returns.
        let _ = self.batches.send(batch);
    }

    async fn close(self) -> Result<Vec<DataFile>> {
        drop(self.batches);
        self.files
            .await
            .map_err(|e| anyhow!("writing data files stopped: {e}"))?
    }
}

#[derive(Default)]
pub(super) struct Pending {
    /// Writing the last segment; `None` before the first batch and after a failure.
    writer: Option<Encoding>,
    /// Files finished so far (earlier segments).
    files: Vec<DataFile>,
    /// Every batch written, by table schema: a schema change starts a segment.
    segments: Vec<Segment>,
    /// A file could not be written: the files are written again from the segments at commit.
    failed: bool,
    /// Per lane, the first and last position written.
    pub(super) lanes: BTreeMap<String, (u64, u64)>,
    pub(super) records: usize,
    /// Arrow bytes of the batches kept (see `Shared::held`).
    pub(super) bytes: usize,
    pub(super) opened: Option<Instant>,
    pub(super) waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

struct Segment {
    table: Table,
    batches: Vec<RecordBatch>,
}

impl Pending {
    /// Adds a batch for `table` (the table as this sink knows it: schema, spec, location).
    pub(super) async fn add(&mut self, table: &Table, batch: RecordBatch, file_size: usize) {
        let schema = table.metadata().current_schema_id();
        if self
            .segments
            .last()
            .is_none_or(|s| s.table.metadata().current_schema_id() != schema)
        {
            self.close_writer().await;
            self.segments.push(Segment {
                table: table.clone(),
                batches: Vec::new(),
            });
        }
        if let Some(segment) = self.segments.last_mut() {
            segment.batches.push(batch.clone());
        }
        if self.failed {
            return;
        }
        match &self.writer {
            Some(w) => w.write(batch),
            None => match FileWriter::new(table, file_prefix(), file_size) {
                Ok(w) => self.writer.insert(Encoding::start(w)).write(batch),
                Err(e) => self.fail(e),
            },
        }
    }

    /// Files from now on, and files written again, go through `table`'s storage (storage
    /// settings vended anew); each segment keeps its own schema.
    pub(super) fn use_storage_of(&mut self, table: &Table) -> Result<()> {
        for segment in &mut self.segments {
            segment.table = super::table::with_storage_of(&segment.table, table)?;
        }
        Ok(())
    }

    /// Finishes the open files (later batches start new ones).
    pub(super) async fn close_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            match w.close().await {
                Ok(files) => self.files.extend(files),
                Err(e) => self.fail(e),
            }
        }
    }

    fn fail(&mut self, e: anyhow::Error) {
        tracing::warn!("writing a data file failed: {e:#} (written again before the commit)");
        self.writer = None;
        self.failed = true;
    }

    /// The finished data files; after a failure, every batch is written again to new files
    /// (the failed ones are never committed). Errors if that fails too: call again to retry.
    pub(super) async fn finish(&mut self, file_size: usize) -> Result<&[DataFile]> {
        self.close_writer().await;
        if self.failed {
            let mut files = Vec::new();
            for segment in &self.segments {
                let mut w = FileWriter::new(&segment.table, file_prefix(), file_size)?;
                for batch in &segment.batches {
                    w.write(batch.clone()).await?;
                }
                files.extend(w.close().await?);
            }
            self.files = files;
            self.failed = false;
        }
        Ok(&self.files)
    }
}

fn file_prefix() -> String {
    format!("sluice-{}", uuid::Uuid::new_v4())
}
