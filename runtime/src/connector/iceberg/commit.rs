//! Committing: the pending data files are appended in one snapshot together with the source
//! positions they cover, merged with what other writers committed; conflicts are retried on
//! the new snapshot, outages of the catalog or the store with backoff. Nothing is acknowledged
//! before the commit lands.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::Catalog as _;
use tokio::sync::mpsc;

use super::catalog;
use super::pending::Pending;
use super::positions::{self, Positions, COMMIT_ID};
use super::sink::Shared;
use crate::connector::{backoff, one_line, Seal};
use crate::context::TableCommits;
use crate::health::Cause;
use crate::sync::Locked;

/// How a commit attempt ended.
enum Attempt {
    Landed(Table),
    Conflict,
    /// Another writer committed records this one holds: committing would write them twice.
    Fenced(String),
    Failed(String),
}

impl Shared {
    /// Closes the pending files and appends them in one snapshot with their positions, retrying
    /// until it lands; then resolves the waiters.
    pub(super) async fn commit(&self, mut pending: Pending, seal: Option<&Seal>) {
        let result = match seal {
            Some(seal) => match stored(seal).await {
                Ok(()) => self.try_commit(&mut pending, Some(seal)).await,
                Err(e) => Err(format!("{}: {e}", self.uri.display)),
            },
            None => self.try_commit(&mut pending, None).await,
        };
        if let Err(e) = &result {
            tracing::error!("commit abandoned, its records are not acknowledged: {e}");
        }
        let bytes = pending.bytes;
        for w in std::mem::take(&mut pending.waiters) {
            let _ = w.send(result.clone());
        }
        drop(pending);
        self.held.fetch_sub(bytes, Ordering::AcqRel);
        self.released.notify_waiters();
        if result.is_ok() {
            self.refresh().await;
        }
    }

    /// After a commit: the table as the catalog has it now, so that vended storage settings
    /// (short-lived credentials) are renewed at least once per commit interval and columns
    /// another writer added are written.
    async fn refresh(&self) {
        match self.load_fresh().await {
            Ok(Some(fresh)) => {
                let mut state = self.state.lock().await;
                if let Err(e) = self.adopt(&mut state, fresh).await {
                    tracing::warn!(table = %self.uri.display, "taking the reloaded table: {e:#}");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(table = %self.uri.display, "reloading the table after a commit: {e:#} (the next commit tries again)")
            }
        }
    }

    async fn try_commit(&self, pending: &mut Pending, seal: Option<&Seal>) -> Result<(), String> {
        let display = &self.uri.display;
        let started = Instant::now();
        let mut delays = backoff::delays(Duration::from_millis(200), Duration::from_secs(10));
        // Conflicts are retried at once on the new snapshot, then with a growing pause: many
        // writers committing together would otherwise keep colliding.
        let mut conflict_delays =
            backoff::delays(Duration::from_millis(20), Duration::from_secs(2));
        let files = loop {
            match pending.finish(self.uri.target_file_size).await {
                Ok(files) => break files.to_vec(),
                Err(e) => {
                    self.retry_later(format!("writing data files: {e:#}"), started, &mut delays)
                        .await?;
                    // A store that refuses the credentials the catalog vended (they expire):
                    // the files are written again with the ones it vends now.
                    if let Ok(Some(fresh)) = self.load_fresh().await {
                        if let Err(e) = pending.use_storage_of(&fresh) {
                            tracing::warn!(table = %self.uri.display, "{e:#}");
                        }
                    }
                }
            }
        };
        let files_ms = started.elapsed().as_millis() as u64;
        // A checkpoint commits even without rows when its lanes' positions or states moved.
        let moved = seal.is_some_and(|s| !s.positions.is_empty() || !s.states.is_empty());
        if files.is_empty() && !moved {
            return Ok(());
        }
        let mut ours = Positions::default();
        for (lane, (_, last)) in &pending.lanes {
            ours.advance(lane, *last);
        }
        if let Some(seal) = seal {
            for (lane, at) in &seal.positions {
                ours.advance(lane, *at);
            }
            for lane in &seal.states {
                ours.set_state(lane, seal.id);
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let (mut base, mut conflicts) = (None, 0u32);
        loop {
            let attempt = self.attempt(&files, &pending.lanes, &ours, &id, &mut base);
            match attempt.await {
                Attempt::Landed(table) => {
                    let held = positions::in_table(&table.metadata_ref(), &self.writer)
                        .map_err(|e| format!("{display}: {e}"))?;
                    self.committed.locked().merge(&held);
                    self.health.recovered(display, &[Cause::Unreachable]);
                    self.metrics.count_table_commit(
                        display,
                        TableCommits {
                            records: pending.records as u64,
                            files: files.len() as u64,
                            conflicts: conflicts.into(),
                            seconds: started.elapsed().as_secs_f64(),
                            ..TableCommits::default()
                        },
                    );
                    tracing::info!(
                        table = %self.uri.display,
                        records = pending.records,
                        files = files.len(),
                        lanes = pending.lanes.len(),
                        conflicts,
                        commit_ms = started.elapsed().as_millis() as u64,
                        files_ms,
                        "committed"
                    );
                    // The answer to a commit carries no storage settings vended by the catalog:
                    // the table is loaded again instead (`refresh`).
                    return Ok(());
                }
                Attempt::Conflict => {
                    conflicts += 1;
                    tracing::debug!(table = %self.uri.display, conflicts, "commit conflict: another writer committed first; retrying on the new snapshot");
                    if conflicts > 1 {
                        let delay = conflict_delays.next().unwrap_or(Duration::from_secs(2));
                        tokio::time::sleep(delay).await;
                    }
                }
                Attempt::Fenced(why) => return Err(format!("{display}: {why}")),
                Attempt::Failed(why) => {
                    self.retry_later(format!("commit failed: {why}"), started, &mut delays)
                        .await?
                }
            }
        }
    }

    /// After a failure: says so (log, health), then waits with backoff; gives up only when
    /// the run is stopping and the failure has lasted 30 s.
    async fn retry_later(
        &self,
        why: String,
        started: Instant,
        delays: &mut (impl Iterator<Item = Duration> + Send),
    ) -> Result<(), String> {
        let display = &self.uri.display;
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        tracing::warn!(table = %self.uri.display, "{why} (retrying in {delay:?})");
        self.health
            .trouble(display, Cause::Unreachable, why.clone());
        if *self.stopping.borrow() && started.elapsed() > Duration::from_secs(30) {
            return Err(format!("{display}: {why}; gave up while stopping"));
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn attempt(
        &self,
        files: &[DataFile],
        lanes: &BTreeMap<String, (u64, u64)>,
        ours: &Positions,
        id: &str,
        base: &mut Option<Option<i64>>,
    ) -> Attempt {
        let table = match self.catalog.load_table(&self.ident).await {
            Ok(t) => t,
            Err(e) => return Attempt::Failed(one_line(&e)),
        };
        let metadata = table.metadata_ref();
        let current = metadata.current_snapshot_id();
        let since = *base.get_or_insert(current);
        if positions::committed(&metadata, id, since) {
            return Attempt::Landed(table); // an earlier attempt landed; its answer was lost
        }
        let mut merged = match positions::in_table(&metadata, &self.writer) {
            Ok(p) => p,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
        for (lane, (first, _)) in lanes {
            if let Some(at) = merged.get(lane).filter(|at| at >= first) {
                return Attempt::Fenced(format!(
                    "another writer committed {lane}{at} while this one held {lane}{first} and later, uncommitted: \
                     not committing them twice; restart to resume from the table"
                ));
            }
        }
        merged.merge(ours);
        merged.prune(ours);
        let mut properties: HashMap<String, String> =
            merged.to_properties(&self.writer).into_iter().collect();
        properties.insert(COMMIT_ID.to_owned(), id.to_owned());
        let tx = Transaction::new(&table);
        let append = tx
            .fast_append()
            .with_check_duplicate(false)
            .add_data_files(files.to_vec())
            .set_snapshot_properties(properties);
        let tx = match append.apply(tx) {
            Ok(tx) => tx,
            Err(e) => return Attempt::Failed(one_line(&e)),
        };
        match tx.commit(&self.catalog.pinned(current)).await {
            Ok(table) => Attempt::Landed(table),
            Err(e) if catalog::is_conflict(&e) => Attempt::Conflict,
            Err(e) => Attempt::Failed(one_line(&e)),
        }
    }
}

/// Commits every `commit` interval, when `commit_records` are pending, when half of
/// `max_pending` is (the other half fills while it lands: writers wait only if it is slow),
/// when asked (revoked lanes) and at the stop; the last commit when the sink is dropped.
pub(super) async fn committer(shared: Arc<Shared>, mut closed: mpsc::Receiver<()>) {
    let every = shared.uri.commit_every;
    let tick = (every / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut stopping = shared.stopping.clone();
    loop {
        let last = tokio::select! {
            _ = closed.recv() => true,
            _ = tokio::time::sleep(tick) => false,
            _ = shared.commit_now.notified() => false,
            Ok(()) = stopping.changed() => false,
        };
        if shared.at_checkpoints.load(Ordering::Relaxed) {
            commit_checkpoints(&shared, last).await;
            if last {
                return;
            }
            continue;
        }
        let pending = {
            let mut state = shared.state.lock().await;
            let p = &state.pending;
            let forced = shared.force.swap(false, Ordering::Relaxed);
            let due = last
                || forced
                || *stopping.borrow()
                || p.opened.is_some_and(|t| t.elapsed() >= every)
                || shared.uri.commit_records.is_some_and(|n| p.records >= n)
                || p.bytes >= shared.uri.max_pending / 2;
            (due && !p.waiters.is_empty()).then(|| std::mem::take(&mut state.pending))
        };
        if let Some(pending) = pending {
            shared.commit(pending, None).await;
        }
        if last {
            return;
        }
    }
}

/// A stateful pipeline's commits: every sealed checkpoint, in order. At the end, what was
/// written after the last checkpoint is not committed (its state was never stored): its
/// batches stay unacknowledged and are read again.
async fn commit_checkpoints(shared: &Shared, last: bool) {
    loop {
        let next = shared.sealed.locked().pop_front();
        let Some((pending, seal)) = next else { break };
        shared.commit(pending, Some(&seal)).await;
    }
    if last {
        let pending = std::mem::take(&mut shared.state.lock().await.pending);
        let bytes = pending.bytes;
        for w in pending.waiters {
            let _ = w.send(Err(format!(
                "{}: not committed: the pipeline stopped before a checkpoint took these records in",
                shared.uri.display
            )));
        }
        shared.held.fetch_sub(bytes, Ordering::AcqRel);
        shared.released.notify_waiters();
    }
}

/// Waits until the checkpoint's states are stored.
async fn stored(seal: &Seal) -> Result<(), String> {
    let mut durable = seal.durable.clone();
    match durable.wait_for(Option::is_some).await.map(|v| *v) {
        Ok(Some(true)) => Ok(()),
        _ => Err(format!(
            "checkpoint {}: its state could not be stored; nothing of it is committed",
            seal.id
        )),
    }
}
