//! Loading the table again: after commits and failed writes (storage settings a catalog vends
//! expire), when records do not fit (another writer may have added the columns), when a
//! source is assigned lanes (the positions and states it resumes from); and holding writers
//! back while too much waits for a commit.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use iceberg::table::Table;

use super::positions::{self, Positions};
use super::sink::{Shared, State};
use super::table;
use crate::connector::backoff;
use crate::connector::keepers::PositionKeeper;
use crate::format::parquet::ColumnEncoder;
use crate::sync::Locked;

impl Shared {
    /// The table as the catalog has it now (schema, and the storage settings it vends), within
    /// [`RELOAD_TIMEOUT`].
    pub(super) async fn load_fresh(&self) -> Result<Option<Table>> {
        match tokio::time::timeout(RELOAD_TIMEOUT, self.catalog.load(&self.ident)).await {
            Ok(loaded) => loaded,
            Err(_) => Err(anyhow!("the catalog did not answer in {RELOAD_TIMEOUT:?}")),
        }
    }

    /// Takes what changed in `fresh`: its storage settings (short-lived credentials a catalog
    /// vends) and its schema (columns another writer added). Files being written keep the
    /// schema they were started with.
    pub(super) async fn adopt(&self, state: &mut State, fresh: Table) -> Result<()> {
        let schema = |t: &Table| t.metadata().current_schema_id();
        if state.table.as_ref().map(schema) != Some(schema(&fresh)) {
            state.pending.close_writer().await;
            state.encoder = Some(ColumnEncoder::with_schema(table::arrow_schema(&fresh)?));
            tracing::info!(table = %self.uri.display, schema = schema(&fresh), "the table's schema changed: writing with it");
        }
        state.pending.use_storage_of(&fresh)?;
        state.table = Some(fresh);
        Ok(())
    }

    /// Loads the table again when records do not fit (at most once a second); whether its
    /// schema changed, so they may fit now.
    pub(super) async fn reload_for_misfits(&self, state: &mut State) -> Result<bool> {
        if state
            .misfits_reloaded
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(false);
        }
        state.misfits_reloaded = Some(Instant::now());
        let Some(fresh) = self
            .load_fresh()
            .await
            .map_err(|e| anyhow!("{}: {e:#}", self.uri.display))?
        else {
            return Ok(false);
        };
        let before = state
            .table
            .as_ref()
            .map(|t| t.metadata().current_schema_id());
        let changed = before != Some(fresh.metadata().current_schema_id());
        self.adopt(state, fresh).await?;
        Ok(changed)
    }

    /// Waits while the records held for commits that have not landed pass `max_pending`, asking
    /// for a commit at once: memory stays bounded through an outage, and the source slows down.
    pub(super) async fn wait_for_room(&self) {
        loop {
            let released = self.released.notified();
            let held = self.held.load(Ordering::Acquire);
            if held < self.uri.max_pending {
                return;
            }
            if self.at_checkpoints.load(Ordering::Relaxed) {
                // Only a checkpoint frees memory here, and it needs this writer to reach it:
                // ask for one, and wait only while sealed ones are on their way to the table.
                self.checkpoint_request.notify_one();
                if self.sealed.locked().is_empty() {
                    return;
                }
                released.await;
                continue;
            }
            tracing::debug!(table = %self.uri.display, held, "max_pending reached: waiting for a commit");
            self.force.store(true, Ordering::Relaxed);
            self.commit_now.notify_one();
            released.await;
        }
    }
}

/// How long one load of the table's positions may take when partitions are assigned, and how
/// many times it is tried: a rebalance must not hang on a catalog that does not answer.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
const RELOAD_ATTEMPTS: usize = 3;

impl PositionKeeper for Shared {
    fn reload(&self) -> Result<()> {
        let display = &self.uri.display;
        let mut delays = backoff::delays(Duration::from_millis(500), Duration::from_secs(5));
        let mut attempt = 0;
        let held = loop {
            attempt += 1;
            let loaded = self.runtime.block_on(async {
                match tokio::time::timeout(RELOAD_TIMEOUT, self.catalog.load(&self.ident)).await {
                    Ok(loaded) => loaded,
                    Err(_) => Err(anyhow!("the catalog did not answer in {RELOAD_TIMEOUT:?}")),
                }
            });
            let why = match loaded {
                // Created with the first batch: nothing committed yet.
                Ok(None) => break Positions::default(),
                Ok(Some(table)) => match positions::in_table(&table.metadata_ref(), &self.writer) {
                    Ok(held) => break held,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if attempt == RELOAD_ATTEMPTS {
                anyhow::bail!(
                    "{display}: cannot load the table's positions for the partitions just \
                     assigned ({why:#}), tried {RELOAD_ATTEMPTS} times: stopping rather than \
                     write records the table may hold; restart once the catalog answers"
                );
            }
            let delay = delays.next().unwrap_or(RELOAD_TIMEOUT);
            tracing::warn!(table = %self.uri.display, "loading the table's positions failed: {why:#} (retrying in {delay:?})");
            std::thread::sleep(delay);
        };
        self.committed.locked().merge(&held);
        Ok(())
    }

    fn commit_soon(&self) {
        if self.at_checkpoints.load(Ordering::Relaxed) {
            self.checkpoint_request.notify_one();
            return;
        }
        self.force.store(true, Ordering::Relaxed);
        self.commit_now.notify_one();
    }

    fn covers(&self, lane: &str, n: u64) -> bool {
        self.committed.locked().covers(lane, n)
    }

    fn state_epoch(&self, lane: &str) -> Option<u64> {
        self.committed.locked().state(lane)
    }
}
