//! The table sink: records become Arrow batches under the table's schema and go into data
//! files (one set per partition, rolled at the target size); every `commit` interval (or
//! `commit_records`) the files written since the last commit are appended in one snapshot whose
//! summary carries the source positions they cover. A batch is durable, and its source
//! positions acknowledged, only once that commit has landed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context as _, Result};
use arrow_array::BooleanArray;
use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableIdent};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::catalog::{self, TableCatalog};
use super::commit;
use super::evolve;
use super::pending::Pending;
use super::positions::Positions;
use super::table::{self, PartitionField};
use super::uri::IcebergUri;
use crate::connector::blobs::{self, Blobs, TableBlobs};
use crate::connector::keepers::{CheckpointRequests, Keepers};
use crate::connector::one_line;
use crate::connector::{before_input_of, BoxFuture, Refusals, Rejected, Seal, Sink, Written};
use crate::context::{Context, EndpointMetrics};
use crate::format::parquet::{ColumnEncoder, Misfit};
use crate::health::Health;
use crate::record::Record;
use crate::sync::Locked;

pub struct IcebergSink {
    shared: Arc<Shared>,
    /// Dropped with the last handle: tells the committer to commit what is pending and stop.
    _open: mpsc::Sender<()>,
}

pub(super) struct Shared {
    pub(super) uri: IcebergUri,
    pub(super) ident: TableIdent,
    /// Whose positions these are in the table's snapshots (`PIPELINE` or `PIPELINE.OUTPUT`).
    pub(super) writer: String,
    pub(super) catalog: Arc<TableCatalog>,
    pub(super) partition: Vec<PartitionField>,
    /// Columns for a table this sink creates, from `schema=` examples.
    pub(super) examples: Option<ColumnEncoder>,
    pub(super) state: tokio::sync::Mutex<State>,
    /// What the table holds: records at or before these are passed over.
    pub(super) committed: std::sync::Mutex<Positions>,
    pub(super) commit_now: Notify,
    pub(super) force: AtomicBool,
    /// Bytes of records held for commits that have not landed (pending and committing), and
    /// word when a commit releases some: writers wait beyond `max_pending`.
    pub(super) held: AtomicUsize,
    pub(super) released: Notify,
    /// A stateful pipeline's sink: it commits checkpoints only ([`Sink::seal`]), each what
    /// was pending when the pipeline paused for it, once the checkpoint's state is stored.
    pub(super) at_checkpoints: AtomicBool,
    pub(super) sealed: std::sync::Mutex<VecDeque<(Pending, Seal)>>,
    /// Asks the pipeline for a checkpoint (a revoke, or memory to free).
    pub(super) checkpoint_request: Arc<Notify>,
    pub(super) health: Arc<Health>,
    pub(super) metrics: Arc<EndpointMetrics>,
    pub(super) stopping: watch::Receiver<bool>,
    pub(super) runtime: tokio::runtime::Handle,
}

pub(super) struct State {
    /// `None` until the table exists (created from the first batch when missing).
    pub(super) table: Option<Table>,
    pub(super) encoder: Option<ColumnEncoder>,
    pub(super) pending: Pending,
    /// When the table was last loaded again because records did not fit it.
    pub(super) misfits_reloaded: Option<Instant>,
}

impl IcebergSink {
    /// Opens the catalog and, if it exists, the table; `writer` names this sink's positions in
    /// the table (`PIPELINE`, or `PIPELINE.OUTPUT`), `pipeline` is whose source it follows.
    pub async fn open(
        uri: &IcebergUri,
        pipeline: &str,
        writer: &str,
        ctx: &Context,
    ) -> Result<Self> {
        let partition = uri
            .partition
            .iter()
            .map(|p| PartitionField::parse(p))
            .collect::<Result<Vec<_>>>()
            .with_context(|| uri.display.clone())?;
        let examples = match &uri.schema {
            None => None,
            Some(path) => {
                let lines = std::fs::read(path).with_context(|| {
                    format!(
                        "{}: cannot read the schema examples {}",
                        uri.display,
                        path.display()
                    )
                })?;
                Some(
                    ColumnEncoder::from_examples(&lines)
                        .map_err(|e| anyhow!("{}: schema {}: {e}", uri.display, path.display()))?,
                )
            }
        };
        let catalog = catalog::open(uri).await?;
        let namespace = NamespaceIdent::from_vec(uri.namespace.clone())
            .map_err(|e| anyhow!("{}: {}", uri.display, one_line(&e)))?;
        let ident = TableIdent::new(namespace, uri.table.clone());
        let shared = Arc::new(Shared {
            uri: uri.clone(),
            ident,
            writer: writer.to_owned(),
            catalog,
            partition,
            examples,
            state: tokio::sync::Mutex::new(State {
                table: None,
                encoder: None,
                pending: Pending::default(),
                misfits_reloaded: None,
            }),
            committed: Default::default(),
            commit_now: Notify::new(),
            force: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            released: Notify::new(),
            at_checkpoints: AtomicBool::new(false),
            sealed: Default::default(),
            checkpoint_request: ctx.shared::<CheckpointRequests>().of(pipeline),
            health: ctx.health.clone(),
            metrics: ctx.endpoints.clone(),
            stopping: ctx.stopping(),
            runtime: tokio::runtime::Handle::current(),
        });
        shared.open_table().await?;
        ctx.shared::<Keepers>().add(pipeline, shared.clone());
        let (open, closed) = mpsc::channel(1);
        tokio::spawn(commit::committer(shared.clone(), closed));
        Ok(IcebergSink {
            shared,
            _open: open,
        })
    }
}

impl Shared {
    /// Writes `records` into the pending data files; returns the ones that do not fit the table
    /// and a receiver resolved when the commit holding the rest lands.
    async fn write(&self, records: &[Record], refusals: Refusals) -> Result<Written> {
        let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_ref()).collect();
        self.wait_for_room().await;
        // JSON -> Arrow outside the lock, under the columns the table has now: workers decode
        // side by side. Decoded again under the lock only if the columns changed meanwhile.
        let encoder = self.state.lock().await.encoder.clone();
        let decoded = encoder.map(|mut e| {
            let decoded = e.encode(&values);
            (e, decoded)
        });
        let mut state = self.state.lock().await;
        if state.table.is_none() {
            let mut infer = ColumnEncoder::default();
            let (_, misfits) = infer.encode(&values);
            let Some(columns) = infer.schema().cloned() else {
                return Ok(Written::done(rejections(misfits, &values, &[])));
            };
            let table = self.create(&columns).await?;
            self.check_partition(&table)?;
            // Another process may have created it first, and committed since.
            self.take_positions(&table)?;
            state.encoder = Some(ColumnEncoder::with_schema(table::arrow_schema(&table)?));
            state.table = Some(table);
        }
        let (mut batch, mut misfits) = match decoded {
            Some((used, decoded))
                if state
                    .encoder
                    .as_ref()
                    .is_some_and(|e| e.same_columns(&used)) =>
            {
                decoded
            }
            _ => encode(&mut state, &values)?,
        };
        // Another writer may have added the columns these records need: look once a second.
        if !misfits.is_empty() && self.reload_for_misfits(&mut state).await? {
            (batch, misfits) = encode(&mut state, &values)?;
        }
        let mut unaddable = Vec::new();
        if self.uri.evolve && !misfits.is_empty() {
            let evolved = evolve::add_columns(self, &mut state, &values, &misfits).await?;
            if evolved.added {
                (batch, misfits) = encode(&mut state, &values)?;
            }
            unaddable = evolved.refused;
        }
        // Rows of the batch are the records that fit, in order.
        let mut upto = records.len();
        if let (Refusals::StopAtInput, Some(&(first, _))) = (refusals, misfits.first()) {
            // Nothing of the refused record's input or after it: the commit's positions would
            // cover it, and a restart would pass it over.
            upto = before_input_of(records, first);
            batch = batch.map(|b| b.slice(0, upto));
            misfits.truncate(1);
        }
        let rejected = rejections(misfits.clone(), &values, &unaddable);
        let Some(batch) = batch else {
            return Ok(Written::done(rejected));
        };
        // Pass over the records the table holds and those already pending (a lane's records
        // come in order: a lower one is a re-read).
        let fitting = (0..upto).filter(|i| misfits.binary_search_by_key(i, |m| m.0).is_err());
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut lanes = Vec::new();
        {
            let committed = self.committed.locked();
            let pending = &state.pending.lanes;
            for i in fitting {
                let lane = records[i].lane();
                let done = lane.as_ref().is_some_and(|(l, n)| {
                    committed.covers(l, *n) || pending.get(l).is_some_and(|(_, last)| n <= last)
                });
                keep.push(!done);
                if let (false, Some(lane)) = (done, lane) {
                    lanes.push(lane);
                }
            }
        }
        let batch = if keep.iter().all(|k| *k) {
            batch
        } else {
            let skipped = keep.iter().filter(|k| !**k).count();
            tracing::debug!(skipped, "records already in the table passed over");
            arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))?
        };
        if batch.num_rows() == 0 {
            return Ok(Written::done(rejected));
        }
        let rows = batch.num_rows();
        let bytes = batch.get_array_memory_size();
        let State { table, pending, .. } = &mut *state;
        let table = table.as_ref().ok_or_else(|| anyhow!("no table"))?;
        pending.add(table, batch, self.uri.target_file_size).await;
        pending.bytes += bytes;
        self.held.fetch_add(bytes, Ordering::AcqRel);
        for (lane, n) in lanes {
            let span = pending.lanes.entry(lane).or_insert((n, n));
            span.0 = span.0.min(n);
            span.1 = span.1.max(n);
        }
        pending.records += rows;
        pending.opened.get_or_insert_with(Instant::now);
        let (tx, rx) = oneshot::channel();
        pending.waiters.push(tx);
        if self
            .uri
            .commit_records
            .is_some_and(|n| pending.records >= n)
            || pending.bytes >= self.uri.max_pending / 2
        {
            if self.at_checkpoints.load(Ordering::Relaxed) {
                self.checkpoint_request.notify_one();
            } else {
                self.commit_now.notify_one();
            }
        }
        let display = self.uri.display.clone();
        Ok(Written {
            rejected,
            durable: Box::pin(async move {
                match rx.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(anyhow!(e)),
                    Err(_) => Err(anyhow!("{display}: the commit was abandoned")),
                }
            }),
        })
    }
}

fn encode(
    state: &mut State,
    values: &[&[u8]],
) -> Result<(Option<arrow_array::RecordBatch>, Vec<Misfit>)> {
    let encoder = state.encoder.as_mut().ok_or_else(|| anyhow!("no table"))?;
    Ok(encoder.encode(values))
}

/// The records that do not fit, and why: a record with a field `evolve=true` cannot add as a
/// column says which and what to do instead.
fn rejections(
    misfits: Vec<Misfit>,
    values: &[&[u8]],
    unaddable: &[evolve::Unaddable],
) -> Vec<Rejected> {
    misfits
        .into_iter()
        .map(|(index, why)| Rejected {
            index,
            message: match evolve::unaddable_in(values[index], unaddable) {
                Some(u) => u.reason.clone(),
                None => format!("{why}: it does not fit the table (fix the record, or add evolve=true to add new fields as columns)"),
            },
        })
        .collect()
}

impl Sink for IcebergSink {
    fn write<'a>(
        &'a mut self,
        records: &'a [Record],
        refusals: Refusals,
    ) -> BoxFuture<'a, Result<Written>> {
        Box::pin(self.shared.write(records, refusals))
    }

    fn fork(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(IcebergSink {
            shared: self.shared.clone(),
            _open: self._open.clone(),
        }))
    }

    fn keeps_positions(&self) -> bool {
        true
    }

    /// The first checkpoint may come before any row: the table must exist by then.
    fn commit_at_checkpoints(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.shared.state.lock().await.table.is_none() {
                anyhow::bail!(
                    "{}: a stateful pipeline commits into the table at every checkpoint, and the \
                     first may come before any row: create the table first, or give schema=FILE \
                     (example records) to create it at the start",
                    self.shared.uri.display
                );
            }
            self.shared.at_checkpoints.store(true, Ordering::Relaxed);
            Ok(())
        })
    }

    fn seal<'a>(&'a mut self, seal: &'a Seal) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let pending = std::mem::take(&mut self.shared.state.lock().await.pending);
            self.shared
                .sealed
                .locked()
                .push_back((pending, seal.clone()));
            self.shared.commit_now.notify_one();
            Ok(())
        })
    }

    /// Beside the table: under the embedded catalog's warehouse, or the table's location
    /// (through its file IO and the storage settings the catalog vends).
    fn checkpoint_blobs<'a>(
        &'a mut self,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<Option<Arc<dyn Blobs>>>> {
        Box::pin(async move {
            if let super::uri::Catalog::Sqlite { warehouse, .. } = &self.shared.uri.catalog {
                let uri = format!("file://{}/_sluice/state", warehouse.display());
                return blobs::open(&uri, ctx).await.map(Some);
            }
            let state = self.shared.state.lock().await;
            Ok(state.table.as_ref().map(|t| {
                Arc::new(TableBlobs {
                    io: t.file_io().clone(),
                    root: format!(
                        "{}/_sluice/state",
                        t.metadata().location().trim_end_matches('/')
                    ),
                }) as Arc<dyn Blobs>
            }))
        })
    }

    /// A commit covers every batch of its interval: the worker must not wait for it sooner
    /// (4096 batches: a commit interval at a few hundred thousand records/s), yet an outage
    /// must not buffer without bound.
    fn max_unacked_batches(&self) -> usize {
        4096
    }
}
