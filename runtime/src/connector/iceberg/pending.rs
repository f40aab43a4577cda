//! What the next commit appends: data files being written as batches arrive, the batches
//! themselves (so the files can be written again when the store failed mid-way: nothing is
//! acknowledged before its commit lands, so nothing may be lost before either), the source
//! positions they cover and the writers waiting for the commit.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use arrow_array::RecordBatch;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use tokio::sync::oneshot;

use super::table::FileWriter;

#[derive(Default)]
pub(super) struct Pending {
    /// Writing the last segment; `None` before the first batch and after a failure.
    writer: Option<FileWriter>,
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
        let written = match &mut self.writer {
            Some(w) => w.write(batch).await,
            None => match FileWriter::new(table, file_prefix(), file_size) {
                Ok(w) => self.writer.insert(w).write(batch).await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = written {
            self.fail(e);
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
