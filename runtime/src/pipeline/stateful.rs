//! A worker's lanes of a stateful pipeline: each lane's state per stateful stage, restored from
//! the last checkpoint when the lane is new to the worker (or its source restarted it), and
//! snapshotted at checkpoint barriers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{oneshot, watch, Notify};

use super::chain::{LaneInfo, LaneSet};
use crate::connector::keepers::PositionKeeper;
use crate::record::{Origin, Record};
use crate::state::{snapshot, LaneCall, LaneState, StateStore};

/// How a stateful pipeline checkpoints.
pub(crate) struct Checkpointing {
    pub store: Arc<StateStore>,
    /// The sink that keeps positions (a table): its positions and state checkpoints are the
    /// truth a lane is restored from. Without one, each lane's newest checkpoint is.
    pub keeper: Option<Arc<dyn PositionKeeper>>,
    pub every: Duration,
    /// A sink asks for a checkpoint now (a rebalance, memory to free).
    pub requests: Arc<Notify>,
    /// Bytes of state one lane may hold per plugin.
    pub state_limit: usize,
}

/// A checkpoint barrier as a worker meets it: everything before it is written to the sinks.
pub(super) struct Barrier {
    pub seq: u64,
    pub reply: oneshot::Sender<Vec<LaneSnapshot>>,
    /// The worker waits here until the pipeline has sealed the sinks.
    pub resume: watch::Receiver<bool>,
}

/// One lane's part of a checkpoint.
pub(super) struct LaneSnapshot {
    pub lane: Arc<str>,
    /// The last input position its state took in (replayable lanes).
    pub position: Option<u64>,
    /// Per stateful stage whose state changed since the last checkpoint: its bytes.
    pub states: Vec<(usize, Vec<u8>)>,
}

/// A lane as its records name it: `user_sessions/3@`, `in/a.parquet#`, `stdin:`.
pub(super) struct LaneKey {
    pub name: Arc<str>,
    pub info: LaneInfo,
    /// The last record's position in the lane.
    pub last: Option<u64>,
}

impl LaneKey {
    /// The lane of a batch's records (all of one lane), from their origins.
    pub fn of(records: &[Record]) -> Option<LaneKey> {
        let last = records.last()?;
        let (prefix, sep, n, replayable) = match last.origin.as_ref()? {
            Origin::At(prefix, sep, n) => (prefix.clone(), *sep, *n, true),
            Origin::Once(prefix, sep, n) => (prefix.clone(), *sep, *n, false),
            Origin::Text(_) => return None,
        };
        Some(LaneKey {
            name: format!("{prefix}{sep}").into(),
            last: replayable.then_some(n),
            info: LaneInfo {
                prefix,
                sep,
                replayable,
            },
        })
    }
}

struct Lane {
    set: LaneSet,
    position: Option<u64>,
    /// Saw a batch since the last checkpoint.
    touched: bool,
}

/// A worker's lanes.
pub(super) struct Lanes {
    checkpointing: Arc<Checkpointing>,
    /// The chain's length and which of its stages are stateful.
    stages: usize,
    stateful: Vec<usize>,
    lanes: HashMap<Arc<str>, Lane>,
}

impl Lanes {
    pub fn new(checkpointing: Arc<Checkpointing>, stateful: Vec<usize>, stages: usize) -> Self {
        Lanes {
            checkpointing,
            stages,
            stateful,
            lanes: HashMap::new(),
        }
    }

    pub fn keeper(&self) -> Option<&Arc<dyn PositionKeeper>> {
        self.checkpointing.keeper.as_ref()
    }

    /// The lane of `key`, restored from its last checkpoint when the worker does not hold it
    /// or the source restarted it.
    pub async fn lane(&mut self, key: LaneKey, restart: bool) -> Result<&mut LaneSet> {
        if restart || !self.lanes.contains_key(&key.name) {
            let set = self.restore(&key).await?;
            self.lanes.insert(
                key.name.clone(),
                Lane {
                    set,
                    position: None,
                    touched: false,
                },
            );
        }
        let lane = self.lanes.get_mut(&key.name).expect("inserted above");
        lane.touched = true;
        if key.last.is_some() {
            lane.position = key.last;
        }
        Ok(&mut lane.set)
    }

    async fn restore(&self, key: &LaneKey) -> Result<LaneSet> {
        let cp = &self.checkpointing;
        let mut calls: Vec<LaneCall> = (0..self.stages)
            .map(|_| LaneCall {
                limit: cp.state_limit,
                ..Default::default()
            })
            .collect();
        for &stage in &self.stateful {
            let epoch = match &cp.keeper {
                Some(keeper) => keeper.state_epoch(&key.name),
                None => cp.store.latest(stage, &key.name).await?,
            };
            if let Some(epoch) = epoch {
                calls[stage].state = cp.store.load(stage, &key.name, epoch).await?;
                tracing::debug!(lane = %key.name, stage, epoch, keys = calls[stage].state.keys(), "lane state restored");
            }
        }
        Ok(LaneSet {
            info: key.info.clone(),
            calls,
            ending: false,
        })
    }

    /// Lanes with a processing-time timer due at `now_ms`.
    pub fn due(&self, now_ms: i64) -> Vec<Arc<str>> {
        self.lanes
            .iter()
            .filter(|(_, lane)| {
                self.stateful
                    .iter()
                    .any(|&s| lane.set.calls[s].state.processing_due(now_ms))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn get(&mut self, name: &str) -> Option<&mut LaneSet> {
        self.lanes.get_mut(name).map(|l| &mut l.set)
    }

    /// Every lane's part of a checkpoint: the states that changed, as bytes. Lanes that saw
    /// no batch since the last checkpoint and have no timers are let go (restored if they
    /// come back).
    pub fn snapshot(&mut self) -> Vec<LaneSnapshot> {
        let stateful = &self.stateful;
        self.lanes.retain(|_, lane| {
            lane.touched
                || stateful.iter().any(|&s| {
                    let state = &lane.set.calls[s].state;
                    state.timers_pending() > 0 || state.is_dirty()
                })
        });
        let mut out = Vec::new();
        for (name, lane) in &mut self.lanes {
            let mut states = Vec::new();
            for &stage in &self.stateful {
                let state: &mut LaneState = &mut lane.set.calls[stage].state;
                if state.is_dirty() {
                    states.push((stage, snapshot::encode(state)));
                    state.clean();
                }
            }
            if states.is_empty() && !lane.touched {
                continue;
            }
            out.push(LaneSnapshot {
                lane: name.clone(),
                position: lane.position,
                states,
            });
            lane.touched = false;
        }
        out
    }

    /// Bytes and keys held, and timers pending, over every lane.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let mut sizes = (0, 0, 0);
        for lane in self.lanes.values() {
            for &s in &self.stateful {
                let state = &lane.set.calls[s].state;
                sizes.0 += state.bytes();
                sizes.1 += state.keys();
                sizes.2 += state.timers_pending();
            }
        }
        sizes
    }
}
