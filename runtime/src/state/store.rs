//! Lane snapshots of one pipeline in a blob store: `ROOT/STAGE/LANE/EPOCH.state`, and for
//! pipelines whose sink keeps no positions, `ROOT/STAGE/LANE/latest` naming the newest epoch.
//! Epochs are checkpoint ids: milliseconds since the epoch when the checkpoint was taken, made
//! strictly increasing within a process, so no two checkpoints of a lane share a name.
//!
//! Old snapshots are deleted as checkpoints move on: those this process stored or restored
//! that are older than the lane's committed checkpoint (the one its restore would load). A
//! process killed between storing a checkpoint and committing it leaves that snapshot behind.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{now_ms, snapshot, LaneState};
use crate::connector::blobs::Blobs;
use crate::sync::Locked;

/// Characters of a lane name kept as they are in a blob name; the rest are %-escaped, so a
/// lane (`user_sessions/3@`, `in/2026/a b.parquet#`) is one path segment.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// A stateful stage's index in the chain, and a lane.
type StageLane = (usize, Arc<str>);

/// Lanes whose old snapshots a store keeps track of (object sources make a lane per object).
const HELD_LANES: usize = 4096;

pub struct StateStore {
    blobs: Arc<dyn Blobs>,
    root: String,
    last_epoch: AtomicU64,
    /// Per (stage, lane), the snapshots this process stored or restored, oldest first.
    held: Mutex<HashMap<StageLane, VecDeque<u64>>>,
}

impl StateStore {
    /// Snapshots under `root` (the pipeline, or a table writer) in `blobs`.
    pub fn new(blobs: Arc<dyn Blobs>, root: &str) -> Self {
        StateStore {
            blobs,
            root: root.trim_matches('/').to_owned(),
            last_epoch: AtomicU64::new(0),
            held: Mutex::default(),
        }
    }

    /// A new checkpoint id: now in ms, above every id this store gave before.
    pub fn next_epoch(&self) -> u64 {
        let now = now_ms().max(0) as u64;
        let mut last = self.last_epoch.load(Ordering::Acquire);
        loop {
            let next = now.max(last + 1);
            match self
                .last_epoch
                .compare_exchange(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    fn dir(&self, stage: usize, lane: &str) -> String {
        format!(
            "{}/{stage}/{}",
            self.root,
            utf8_percent_encode(lane, ESCAPED)
        )
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.blobs.describe(), self.root)
    }

    fn name(&self, stage: usize, lane: &str, epoch: u64) -> String {
        format!("{}/{epoch:020}.state", self.dir(stage, lane))
    }

    pub async fn save(&self, stage: usize, lane: &str, epoch: u64, bytes: Vec<u8>) -> Result<()> {
        self.blobs
            .put(&self.name(stage, lane, epoch), Bytes::from(bytes))
            .await?;
        self.hold(stage, lane, epoch);
        Ok(())
    }

    /// Counts `epoch` among the lane's snapshots to delete once a later one is committed.
    /// Past [`HELD_LANES`] lanes, the one with the oldest snapshot is let go (its snapshots
    /// stay, as a killed process's do).
    fn hold(&self, stage: usize, lane: &str, epoch: u64) {
        let mut held = self.held.locked();
        let epochs = held.entry((stage, lane.into())).or_default();
        if !epochs.contains(&epoch) {
            epochs.push_back(epoch);
        }
        if held.len() > HELD_LANES {
            let oldest = held
                .iter()
                .min_by_key(|(_, epochs)| epochs.back().copied())
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                held.remove(&oldest);
            }
        }
    }

    /// Deletes the lane's snapshots held here that are older than `committed`, the checkpoint
    /// its restore would load. One that cannot be deleted now is tried again next time.
    pub async fn prune(&self, stage: usize, lane: &str, committed: u64) {
        let old: Vec<u64> = {
            let held = self.held.locked();
            let Some(epochs) = held.get(&(stage, Arc::from(lane))) else {
                return;
            };
            epochs.iter().copied().filter(|&e| e < committed).collect()
        };
        for epoch in old {
            let name = self.name(stage, lane, epoch);
            match self.blobs.delete(&name).await {
                Ok(()) => {
                    let mut held = self.held.locked();
                    if let Some(epochs) = held.get_mut(&(stage, Arc::from(lane))) {
                        epochs.retain(|&e| e != epoch);
                    }
                }
                Err(e) => tracing::warn!(
                    "{}: deleting {name}, an old checkpoint: {e:#} (tried again at the next one)",
                    self.describe()
                ),
            }
        }
    }

    /// Entries of `stage`'s state for a new version of its plugin to read before it takes
    /// the state over: from the newest snapshot of up to `lanes` lanes this process holds, up
    /// to `per_lane` entries each, spread over their keys. A snapshot deleted meanwhile (a
    /// newer one was committed) is passed over.
    pub async fn sample(
        &self,
        stage: usize,
        lanes: usize,
        per_lane: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let newest: Vec<(Arc<str>, u64)> = {
            let held = self.held.locked();
            held.iter()
                .filter(|((s, _), _)| *s == stage)
                .filter_map(|((_, lane), epochs)| Some((lane.clone(), *epochs.back()?)))
                .take(lanes)
                .collect()
        };
        let mut sample = Vec::new();
        for (lane, epoch) in newest {
            let name = self.name(stage, &lane, epoch);
            let Some(bytes) = self.blobs.get(&name).await? else {
                continue;
            };
            let state =
                snapshot::decode(&bytes).with_context(|| format!("{}: {name}", self.describe()))?;
            sample.extend(state.sample(per_lane));
        }
        Ok(sample)
    }

    /// Names `epoch` as the lane's newest checkpoint (pipelines whose sink keeps no positions).
    pub async fn set_latest(&self, stage: usize, lane: &str, epoch: u64) -> Result<()> {
        let name = format!("{}/latest", self.dir(stage, lane));
        self.blobs.put(&name, Bytes::from(epoch.to_string())).await
    }

    pub async fn latest(&self, stage: usize, lane: &str) -> Result<Option<u64>> {
        let name = format!("{}/latest", self.dir(stage, lane));
        let Some(text) = self.blobs.get(&name).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&text);
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow!("{}: {name} names no checkpoint ({text:?}): delete it to start the lane's state over", self.describe()))
    }

    /// The lane's state of checkpoint `epoch`; an error if it is missing or unreadable (the
    /// lane cannot go on without the state its position was committed with).
    pub async fn load(&self, stage: usize, lane: &str, epoch: u64) -> Result<LaneState> {
        let name = self.name(stage, lane, epoch);
        let bytes = self.blobs.get(&name).await?.ok_or_else(|| {
            anyhow!(
                "{}: the state of lane {lane} at checkpoint {epoch} ({name}) is missing: it was \
                 deleted, or the checkpoints moved (--checkpoints)",
                self.describe()
            )
        })?;
        let state =
            snapshot::decode(&bytes).with_context(|| format!("{}: {name}", self.describe()))?;
        self.hold(stage, lane, epoch);
        Ok(state)
    }
}
