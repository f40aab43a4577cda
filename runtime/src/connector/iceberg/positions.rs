//! Source positions kept in the table: each Sluice commit's snapshot summary carries, under
//! `sluice.positions.WRITER`, the last position committed for every source lane this writer
//! moved (a Kafka partition `topic/P@`, an object `KEY#`), merged with what other processes of
//! the same writer committed before, under `sluice.moved.WRITER` when each lane last moved, and
//! for a stateful pipeline under `sluice.state.WRITER` the checkpoint whose state of each lane
//! goes with its position.
//! The newest snapshot with the property is the truth; a record at or before its lane's position
//! is already in the table.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use iceberg::spec::TableMetadataRef;
use iceberg::util::snapshot::{ancestors_between, ancestors_of};

/// The snapshot property naming the commit, so a commit that landed although its answer was
/// lost is recognised instead of repeated.
pub const COMMIT_ID: &str = "sluice.commit-id";

/// Object lanes kept in the summary at most (those that moved longest ago go first): a bucket
/// ingested for months must not grow every snapshot's summary without bound.
const MAX_OBJECT_LANES: usize = 4096;

/// An object lane that has not moved for this long is dropped from the summary: its object is
/// long done, and its source keeps its own progress. Kafka lanes (one per partition) stay.
const OBJECT_LANE_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Last committed position per lane, and when each last moved (ms since the epoch).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Positions {
    at: BTreeMap<String, u64>,
    moved: BTreeMap<String, u64>,
    /// Per lane, the checkpoint of its state (stateful pipelines).
    states: BTreeMap<String, u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Positions {
    /// Whether the record at `n` of `lane` is already committed.
    pub fn covers(&self, lane: &str, n: u64) -> bool {
        self.at.get(lane).is_some_and(|&at| n <= at)
    }

    pub fn get(&self, lane: &str) -> Option<u64> {
        self.at.get(lane).copied()
    }

    /// Takes the later position of each lane, and the later time it moved.
    pub fn merge(&mut self, other: &Positions) {
        for (lane, &n) in &other.at {
            let at = self.at.entry(lane.clone()).or_insert(n);
            *at = (*at).max(n);
        }
        for (lane, &ms) in &other.moved {
            let moved = self.moved.entry(lane.clone()).or_insert(ms);
            *moved = (*moved).max(ms);
        }
        for (lane, &epoch) in &other.states {
            let at = self.states.entry(lane.clone()).or_insert(epoch);
            *at = (*at).max(epoch);
        }
    }

    /// The state of `lane` is that of checkpoint `epoch` (checkpoint ids only grow).
    pub fn set_state(&mut self, lane: &str, epoch: u64) {
        let at = self.states.entry(lane.to_owned()).or_insert(epoch);
        *at = (*at).max(epoch);
    }

    /// The checkpoint whose state of `lane` goes with its position.
    pub fn state(&self, lane: &str) -> Option<u64> {
        self.states.get(lane).copied()
    }

    /// `lane` moved to `n` now.
    pub fn advance(&mut self, lane: &str, n: u64) {
        self.advance_at(lane, n, now_ms());
    }

    fn advance_at(&mut self, lane: &str, n: u64, ms: u64) {
        let at = self.at.entry(lane.to_owned()).or_insert(n);
        *at = (*at).max(n);
        let moved = self.moved.entry(lane.to_owned()).or_insert(ms);
        *moved = (*moved).max(ms);
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Drops object lanes that have not moved for [`OBJECT_LANE_AGE`], then those that moved
    /// longest ago beyond [`MAX_OBJECT_LANES`]; never a lane in `keep` (this commit's).
    pub fn prune(&mut self, keep: &Positions) {
        self.prune_at(keep, now_ms());
    }

    fn prune_at(&mut self, keep: &Positions, now: u64) {
        let oldest = now.saturating_sub(OBJECT_LANE_AGE.as_millis() as u64);
        // (moved, lane) of the object lanes that may go, those that moved longest ago first. A
        // lane without a time (written by an older version) counts as moved now.
        let mut objects: Vec<(u64, String)> = self
            .at
            .keys()
            .filter(|l| l.ends_with('#') && !keep.at.contains_key(*l))
            .map(|l| (self.moved.get(l).copied().unwrap_or(now), l.clone()))
            .collect();
        objects.sort();
        let excess = objects.len().saturating_sub(MAX_OBJECT_LANES);
        for (i, (moved, lane)) in objects.into_iter().enumerate() {
            // A lane that holds state is never dropped: its state goes with its position.
            if (i < excess || moved < oldest) && !self.states.contains_key(&lane) {
                self.at.remove(&lane);
                self.moved.remove(&lane);
            }
        }
    }

    /// The snapshot properties for `writer`: positions, when lanes moved and, if any lane
    /// holds state, its checkpoints.
    pub fn to_properties(&self, writer: &str) -> Vec<(String, String)> {
        let json = |map| serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned());
        let names = Properties::of(writer);
        let mut props = vec![(names.at, json(&self.at)), (names.moved, json(&self.moved))];
        if !self.states.is_empty() {
            props.push((names.states, json(&self.states)));
        }
        props
    }

    /// From the properties; `moved` and `states` may be missing (an older version, or a
    /// stateless pipeline, wrote the snapshot).
    pub fn from_json(at: &str, moved: Option<&str>, states: Option<&str>) -> Result<Self> {
        let at = serde_json::from_str(at)
            .map_err(|e| anyhow!("the table's source positions are not valid: {e}"))?;
        let moved = match moved {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(text).unwrap_or_default(),
        };
        let states = match states {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(text)
                .map_err(|e| anyhow!("the table's state checkpoints are not valid: {e}"))?,
        };
        Ok(Positions { at, moved, states })
    }
}

/// The names of a writer's snapshot properties.
struct Properties {
    at: String,
    moved: String,
    states: String,
}

impl Properties {
    fn of(writer: &str) -> Self {
        Properties {
            at: format!("sluice.positions.{writer}"),
            moved: format!("sluice.moved.{writer}"),
            states: format!("sluice.state.{writer}"),
        }
    }
}

/// The positions the table holds for `writer`: from the newest snapshot on the current branch
/// that carries them (other writers' snapshots in between are passed over).
pub fn in_table(metadata: &TableMetadataRef, writer: &str) -> Result<Positions> {
    let names = Properties::of(writer);
    let Some(current) = metadata.current_snapshot_id() else {
        return Ok(Positions::default());
    };
    for snapshot in ancestors_of(metadata, current) {
        let props = &snapshot.summary().additional_properties;
        if let Some(text) = props.get(&names.at) {
            let other = |name: &String| props.get(name).map(String::as_str);
            return Positions::from_json(text, other(&names.moved), other(&names.states));
        }
    }
    Ok(Positions::default())
}

/// Whether the commit `id` is on the current branch, looking back as far as `since` (the
/// snapshot it was based on).
pub fn committed(metadata: &TableMetadataRef, id: &str, since: Option<i64>) -> bool {
    let Some(current) = metadata.current_snapshot_id() else {
        return false;
    };
    ancestors_between(metadata, current, since).any(|s| {
        s.summary()
            .additional_properties
            .get(COMMIT_ID)
            .is_some_and(|c| c == id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_merge_to_the_later_one_and_round_trip() {
        let mut a = Positions::default();
        a.advance("t/0@", 10);
        a.advance("t/1@", 5);
        let mut b = Positions::default();
        b.advance("t/0@", 7);
        b.advance("t/2@", 1);
        a.merge(&b);
        assert_eq!(a.get("t/0@"), Some(10));
        assert_eq!(a.get("t/2@"), Some(1));
        assert!(a.covers("t/1@", 5) && !a.covers("t/1@", 6) && !a.covers("t/3@", 0));
        a.set_state("t/0@", 77);
        let props = a.to_properties("w");
        let prop = |name: &str| {
            props
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let back = Positions::from_json(
            prop("sluice.positions.w").unwrap(),
            prop("sluice.moved.w"),
            prop("sluice.state.w"),
        )
        .unwrap();
        assert_eq!(back, a);
        assert_eq!(back.state("t/0@"), Some(77));
        assert!(Positions::from_json("[1]", None, None).is_err());
        // An older version's snapshot: positions only.
        let old = Positions::from_json(r#"{"t/0@":3}"#, None, None).unwrap();
        assert_eq!(old.get("t/0@"), Some(3));
    }

    #[test]
    fn object_lanes_are_bounded_and_aged_out_but_kafka_lanes_and_current_ones_stay() {
        let now = 1_000_000_000_000;
        let day = 24 * 3600 * 1000;
        let mut p = Positions::default();
        for i in 0..MAX_OBJECT_LANES + 10 {
            // Named in the opposite order to their age: age decides, not the name.
            p.advance_at(&format!("in/{i:06}.parquet#"), 1, now - i as u64);
        }
        p.advance_at("in/stale.parquet#", 1, now - 8 * day);
        p.advance_at("t/0@", 9, now - 30 * day);
        let mut keep = Positions::default();
        let last = format!("in/{:06}.parquet#", MAX_OBJECT_LANES + 9);
        keep.advance_at(&last, 1, now);
        p.prune_at(&keep, now);
        assert_eq!(
            p.len(),
            MAX_OBJECT_LANES + 2,
            "the bound, the kept lane, Kafka's"
        );
        assert_eq!(p.get("t/0@"), Some(9));
        assert_eq!(p.get(&last), Some(1), "this commit's lane stays");
        assert_eq!(p.get("in/stale.parquet#"), None, "not moved for a week");
        assert_eq!(p.get("in/000000.parquet#"), Some(1), "the newest stay");
        let dropped = format!("in/{:06}.parquet#", MAX_OBJECT_LANES + 8);
        assert_eq!(p.get(&dropped), None, "the oldest beyond the bound go");
    }
}
