//! Sinks that keep the source positions themselves (Iceberg tables: exactly once), and what a
//! source must tell them around a rebalance. Registered per pipeline in the run's [`Context`].
//!
//! [`Context`]: crate::context::Context

use crate::sync::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A sink whose commits carry the source positions they acknowledge.
pub trait PositionKeeper: Send + Sync {
    /// Reloads the committed positions, so records another member already committed are passed
    /// over. Blocking, and bounded in time (retried, then an error naming the fix): called from
    /// a source's own thread when lanes are assigned to it.
    fn reload(&self) -> anyhow::Result<()>;

    /// Commits what is pending at once: lanes are being revoked, and their positions must be in
    /// the table before another member takes them. (For a stateful pipeline: asks it for a
    /// checkpoint, which the sink commits.)
    fn commit_soon(&self);

    /// Whether the record at `n` of `lane` is already in the table: a stateful pipeline passes
    /// it over before its plugins see it (its effect is in the state restored).
    fn covers(&self, lane: &str, n: u64) -> bool;

    /// The checkpoint whose state of `lane` goes with the table's positions, if any.
    fn state_epoch(&self, lane: &str) -> Option<u64>;
}

/// Per pipeline, a way for its sinks to ask it for a checkpoint now (a rebalance is taking
/// lanes away, and their state must be committed with their positions first).
#[derive(Default)]
pub struct CheckpointRequests(Mutex<HashMap<String, Arc<tokio::sync::Notify>>>);

impl CheckpointRequests {
    pub fn of(&self, pipeline: &str) -> Arc<tokio::sync::Notify> {
        self.0
            .locked()
            .entry(pipeline.to_owned())
            .or_default()
            .clone()
    }
}

/// The position keepers of each pipeline of a run.
#[derive(Default)]
pub struct Keepers(Mutex<HashMap<String, Vec<Arc<dyn PositionKeeper>>>>);

impl Keepers {
    pub fn add(&self, pipeline: &str, keeper: Arc<dyn PositionKeeper>) {
        let mut all = self.0.locked();
        all.entry(pipeline.to_owned()).or_default().push(keeper);
    }

    pub fn of(&self, pipeline: &str) -> Vec<Arc<dyn PositionKeeper>> {
        let all = self.0.locked();
        all.get(pipeline).cloned().unwrap_or_default()
    }
}
