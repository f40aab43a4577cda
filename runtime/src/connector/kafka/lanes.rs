//! A source's partitions as lanes in flight: which batches the pipeline holds unacknowledged,
//! and what a rebalance must do about them. Batches read before their partition was revoked
//! are dropped unprocessed (the new owner reads them); with a sink that keeps positions
//! (exactly once), a revoke first waits until the partition's batches in flight are committed,
//! and an assignment reloads the positions the table holds.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::connector::keepers::PositionKeeper;
use crate::sync::Locked;

/// How long a revoke waits for the revoked partitions' batches in flight to be committed.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Lanes {
    state: Mutex<LaneState>,
    acked: Condvar,
    keepers: Vec<Arc<dyn PositionKeeper>>,
    /// A revoke waits for the batches in flight even without keepers: each stands for a
    /// whole object (events), which the next owner would read again.
    drain: bool,
}

#[derive(Default)]
struct LaneState {
    /// The source is closing: what is unacknowledged now never will be, so revokes do not wait.
    closing: bool,
    in_flight: HashMap<i32, usize>,
    /// Bumped when the partition is revoked: batches read before are stale.
    epoch: HashMap<i32, u64>,
    /// A sink could not load its positions for partitions assigned: nothing may be read.
    failed: Option<String>,
    /// Partitions assigned and not handed out since.
    fresh: std::collections::HashSet<i32>,
}

impl Lanes {
    pub(super) fn new(keepers: Vec<Arc<dyn PositionKeeper>>, drain: bool) -> Self {
        Lanes {
            keepers,
            drain,
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.locked()
    }

    /// The partition's current epoch, for a batch being read now.
    pub(super) fn epoch(&self, partition: i32) -> u64 {
        self.lock().epoch.get(&partition).copied().unwrap_or(0)
    }

    /// A batch read in `epoch` is handed to the pipeline: `None` if its partition was revoked
    /// since (drop it: its new owner reads it), else whether it is the partition's first since
    /// it was assigned.
    pub(super) fn hand_out(&self, partition: i32, epoch: u64) -> Option<bool> {
        let mut state = self.lock();
        if state.epoch.get(&partition).copied().unwrap_or(0) != epoch {
            return None;
        }
        *state.in_flight.entry(partition).or_default() += 1;
        Some(state.fresh.remove(&partition))
    }

    /// A batch handed out is acknowledged (or abandoned).
    pub(super) fn done(&self, partition: i32) {
        let mut state = self.lock();
        if let Some(n) = state.in_flight.get_mut(&partition) {
            *n = n.saturating_sub(1);
        }
        self.acked.notify_all();
    }

    /// Before `partitions` are given up: later batches of theirs are stale, and with sinks that
    /// keep positions (or when draining), the ones in flight are acknowledged first (sinks that
    /// keep positions are asked to commit at once).
    pub(super) fn revoke(&self, partitions: &[i32]) {
        let mut state = self.lock();
        for p in partitions {
            *state.epoch.entry(*p).or_default() += 1;
        }
        if (self.keepers.is_empty() && !self.drain) || state.closing {
            return;
        }
        let started = Instant::now();
        loop {
            let busy: usize = partitions
                .iter()
                .map(|p| state.in_flight.get(p).copied().unwrap_or(0))
                .sum();
            if busy == 0 || state.closing {
                return;
            }
            if started.elapsed() > REVOKE_WAIT {
                tracing::warn!(batches = busy, "revoked partitions still have batches in flight after {REVOKE_WAIT:?}: giving them up uncommitted");
                return;
            }
            drop(state);
            for k in &self.keepers {
                k.commit_soon();
            }
            state = self.lock();
            state = self
                .acked
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The source closes: every batch that will be acknowledged has been (or its pipeline
    /// failed), so the revoke of leaving the group must not wait for the rest.
    pub(super) fn close(&self) {
        self.lock().closing = true;
        self.acked.notify_all();
    }

    /// After partitions are assigned: sinks that keep positions reload them. One that cannot
    /// fails the source: reading without knowing what the table holds would write twice.
    pub(super) fn assigned(&self, partitions: &[i32]) {
        self.lock().fresh.extend(partitions);
        for k in &self.keepers {
            if let Err(e) = k.reload() {
                tracing::error!("{e:#}");
                self.lock().failed.get_or_insert(format!("{e:#}"));
            }
        }
    }

    /// Why the source must stop, if it must.
    pub(super) fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }
}
