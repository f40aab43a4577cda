//! Source positions kept in the table: each Sluice commit's snapshot summary carries, under
//! `sluice.positions.WRITER`, the last position committed for every source lane (a Kafka
//! partition `topic/P@`, an object `KEY#`), merged with what other writers committed before.
//! The newest snapshot with the property is the truth; a record at or before its lane's position
//! is already in the table.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use iceberg::spec::TableMetadata;

use crate::record::{Origin, Record};

/// The snapshot property naming the commit, so a commit that landed although its answer was
/// lost is recognised instead of repeated.
pub const COMMIT_ID: &str = "sluice.commit-id";

/// Object lanes kept in the summary at most (the oldest names are dropped first): a bucket
/// ingested for months must not grow every snapshot's summary without bound. An object whose
/// lane was dropped is long done: its source keeps its own progress.
const MAX_OBJECT_LANES: usize = 4096;

/// Last committed position per lane.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Positions(BTreeMap<String, u64>);

/// The lane and position of a record read from a source that reads the same record at the same
/// position again after a restart: a Kafka partition (`topic/P@OFFSET`) or an object
/// (`KEY#ROW`). Lines of stdin (`stdin:LINE`) start over with other data, so they have none.
pub fn lane_of(record: &Record) -> Option<(String, u64)> {
    match &record.origin {
        Some(Origin::At(prefix, sep @ ('@' | '#'), n)) => Some((format!("{prefix}{sep}"), *n)),
        _ => None,
    }
}

impl Positions {
    /// Whether the record at `n` of `lane` is already committed.
    pub fn covers(&self, lane: &str, n: u64) -> bool {
        self.0.get(lane).is_some_and(|&at| n <= at)
    }

    pub fn get(&self, lane: &str) -> Option<u64> {
        self.0.get(lane).copied()
    }

    /// Takes the later position of each lane.
    pub fn merge(&mut self, other: &Positions) {
        for (lane, &n) in &other.0 {
            self.advance(lane, n);
        }
    }

    pub fn advance(&mut self, lane: &str, n: u64) {
        match self.0.get_mut(lane) {
            Some(at) => *at = (*at).max(n),
            None => {
                self.0.insert(lane.to_owned(), n);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Drops the oldest-named object lanes beyond the bound, except those in `keep`.
    pub fn prune(&mut self, keep: &Positions) {
        let objects: Vec<String> = self
            .0
            .keys()
            .filter(|l| l.ends_with('#') && !keep.0.contains_key(*l))
            .cloned()
            .collect();
        let excess = objects.len().saturating_sub(MAX_OBJECT_LANES);
        for lane in objects.into_iter().take(excess) {
            self.0.remove(&lane);
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map(Positions)
            .map_err(|e| anyhow!("the table's source positions are not valid: {e}"))
    }
}

/// The positions the table holds for `property`: from the newest snapshot on the current
/// branch that carries it (other writers' snapshots in between are passed over).
pub fn in_table(metadata: &TableMetadata, property: &str) -> Result<Positions> {
    let mut snapshot = metadata.current_snapshot();
    while let Some(s) = snapshot {
        if let Some(text) = s.summary().additional_properties.get(property) {
            return Positions::from_json(text);
        }
        snapshot = s
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    Ok(Positions::default())
}

/// Whether the commit `id` is on the current branch, looking back as far as `since` (the
/// snapshot it was based on).
pub fn committed(metadata: &TableMetadata, id: &str, since: Option<i64>) -> bool {
    let mut snapshot = metadata.current_snapshot();
    while let Some(s) = snapshot {
        if Some(s.snapshot_id()) == since {
            return false;
        }
        if s.summary()
            .additional_properties
            .get(COMMIT_ID)
            .map(String::as_str)
            == Some(id)
        {
            return true;
        }
        snapshot = s
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_replayable_origins_have_lanes() {
        let at = |sep| Record {
            origin: Some(Origin::At("x/1".into(), sep, 7)),
            ..Default::default()
        };
        assert_eq!(lane_of(&at('@')), Some(("x/1@".to_owned(), 7)));
        assert_eq!(lane_of(&at('#')), Some(("x/1#".to_owned(), 7)));
        assert_eq!(lane_of(&at(':')), None);
        assert_eq!(lane_of(&Record::new("v")), None);
    }

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
        assert_eq!(Positions::from_json(&a.to_json()).unwrap(), a);
        assert!(Positions::from_json("[1]").is_err());
    }

    #[test]
    fn object_lanes_are_bounded_but_kafka_lanes_and_current_ones_stay() {
        let mut p = Positions::default();
        for i in 0..MAX_OBJECT_LANES + 10 {
            p.advance(&format!("in/{i:06}.parquet#"), 1);
        }
        p.advance("t/0@", 9);
        let mut keep = Positions::default();
        keep.advance("in/000000.parquet#", 1);
        p.prune(&keep);
        assert_eq!(p.len(), MAX_OBJECT_LANES + 2);
        assert_eq!(p.get("t/0@"), Some(9));
        assert_eq!(p.get("in/000000.parquet#"), Some(1));
        assert_eq!(p.get("in/000001.parquet#"), None);
    }
}
