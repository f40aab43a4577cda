//! One lane's state of one plugin: ordered keys with values and optional expiry, timers, the
//! lane's stream time, and how many timers have fired. A call's changes can be undone (a plugin
//! that traps mid-batch leaves nothing behind: the batch is processed again).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// Event time or processing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    Event,
    Processing,
}

/// A timer: fires for `key` once its domain's time passes `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    pub at_ms: i64,
    pub domain: Domain,
    pub key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub value: Vec<u8>,
    /// Processing time (ms since the epoch) after which the entry is gone.
    pub expires_ms: Option<i64>,
}

/// Bytes an entry counts for against the lane's limit: key, value and a fixed overhead.
fn size(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + 32
}

/// What a call changed, to undo it.
#[derive(Debug)]
enum Undo {
    Entry(Vec<u8>, Option<Entry>),
    TimerAdded(Timer),
    TimerRemoved(Timer),
    StreamTime(Option<i64>),
    Fired(u64),
}

/// A put refused: the lane would hold more than its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the lane's state would hold {would} bytes, past its limit of {limit} (state_limit=): keep less per lane (a TTL, fewer keys) or raise the limit")]
pub struct OverLimit {
    pub would: usize,
    pub limit: usize,
}

#[derive(Debug, Default)]
pub struct LaneState {
    pub(super) entries: BTreeMap<Vec<u8>, Entry>,
    pub(super) timers: BTreeSet<Timer>,
    /// The highest event time seen.
    pub(super) stream_time: Option<i64>,
    /// Timers fired so far: the position of the next fired timer's outputs.
    pub(super) fired: u64,
    bytes: usize,
    undo: Vec<Undo>,
    /// Changed since the last checkpoint.
    pub(super) dirty: bool,
}

impl LaneState {
    /// Entries' bytes (keys, values, overhead), as the limit counts them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn keys(&self) -> usize {
        self.entries.len()
    }

    pub fn timers_pending(&self) -> usize {
        self.timers.len()
    }

    pub fn stream_time(&self) -> Option<i64> {
        self.stream_time
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Stored in a checkpoint: unchanged since.
    pub fn clean(&mut self) {
        self.dirty = false;
    }

    /// Whether a processing-time timer is due at `now_ms`.
    pub fn processing_due(&self, now_ms: i64) -> bool {
        self.timers
            .iter()
            .take_while(|t| t.at_ms <= now_ms)
            .any(|t| t.domain == Domain::Processing)
    }

    /// How many timers have fired: the position of the next one's outputs.
    pub fn fired(&self) -> u64 {
        self.fired
    }

    /// The value of `key`, unless absent or expired at `now_ms`.
    pub fn get(&self, key: &[u8], now_ms: i64) -> Option<&[u8]> {
        self.entries
            .get(key)
            .filter(|e| e.expires_ms.is_none_or(|t| t > now_ms))
            .map(|e| e.value.as_slice())
    }

    /// Puts every entry or, past `limit` bytes, none.
    pub fn put_many(
        &mut self,
        entries: Vec<(Vec<u8>, Vec<u8>, Option<i64>)>,
        limit: usize,
    ) -> Result<(), OverLimit> {
        let mut would = self.bytes as isize;
        for (key, value, _) in &entries {
            would += size(key, value) as isize;
            if let Some(old) = self.entries.get(key) {
                would -= size(key, &old.value) as isize;
            }
        }
        let would = would.max(0) as usize;
        if would > limit && would > self.bytes {
            return Err(OverLimit { would, limit });
        }
        for (key, value, expires_ms) in entries {
            self.set(key, Some(Entry { value, expires_ms }));
        }
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) {
        if self.entries.contains_key(key) {
            self.set(key.to_vec(), None);
        }
    }

    fn set(&mut self, key: Vec<u8>, entry: Option<Entry>) {
        if let Some(e) = &entry {
            self.bytes += size(&key, &e.value);
        }
        let old = match entry {
            Some(e) => self.entries.insert(key.clone(), e),
            None => self.entries.remove(&key),
        };
        if let Some(o) = &old {
            self.bytes -= size(&key, &o.value);
        }
        self.undo.push(Undo::Entry(key, old));
        self.dirty = true;
    }

    /// Up to `max` live entries whose keys start with `prefix`, after `start_after`.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        max: usize,
        now_ms: i64,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let from = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        self.entries
            .range((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| e.expires_ms.is_none_or(|t| t > now_ms))
            .take(max)
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }

    /// Drops the entries expired at `now_ms` (they read as absent before already).
    pub fn expire(&mut self, now_ms: i64) {
        let gone: Vec<Vec<u8>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires_ms.is_some_and(|t| t <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.set(key, None);
        }
    }

    pub fn register(&mut self, timer: Timer) {
        if self.timers.insert(timer.clone()) {
            self.undo.push(Undo::TimerAdded(timer));
            self.dirty = true;
        }
    }

    pub fn unregister(&mut self, timer: &Timer) {
        if self.timers.remove(timer) {
            self.undo.push(Undo::TimerRemoved(timer.clone()));
            self.dirty = true;
        }
    }

    /// An event time seen: stream time moves forward, never back.
    pub fn observe(&mut self, event_ms: i64) {
        if self.stream_time.is_none_or(|t| event_ms > t) {
            self.undo.push(Undo::StreamTime(self.stream_time));
            self.stream_time = Some(event_ms);
            self.dirty = true;
        }
    }

    /// Takes the timers due: event-time ones at or before stream time, processing-time ones
    /// at or before `now_ms`; in time order, at most `max`. Each counts as fired: its outputs'
    /// position is `fired` before it plus its index.
    pub fn take_due(&mut self, now_ms: i64, max: usize) -> Vec<Timer> {
        let event_due = self.stream_time;
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|t| match t.domain {
                Domain::Event => event_due.is_some_and(|due| t.at_ms <= due),
                Domain::Processing => t.at_ms <= now_ms,
            })
            .take(max)
            .cloned()
            .collect();
        for t in &due {
            self.unregister(t);
        }
        if !due.is_empty() {
            self.undo.push(Undo::Fired(self.fired));
            self.fired += due.len() as u64;
            self.dirty = true;
        }
        due
    }

    /// Up to `max` entries (key, value), spread evenly over the keys.
    pub fn sample(&self, max: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let step = (self.entries.len() / max.max(1)).max(1);
        self.entries
            .iter()
            .step_by(step)
            .take(max)
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }

    /// The call went through: its changes stay.
    pub fn keep(&mut self) {
        self.undo.clear();
    }

    /// The call failed as a whole: its changes are undone.
    pub fn undo(&mut self) {
        self.undo_to(0);
    }

    /// A point to undo back to: the changes since are undone by [`LaneState::undo_to`].
    pub fn savepoint(&self) -> usize {
        self.undo.len()
    }

    pub fn undo_to(&mut self, savepoint: usize) {
        while self.undo.len() > savepoint {
            let Some(u) = self.undo.pop() else { break };
            match u {
                Undo::Entry(key, old) => {
                    if let Some(o) = &old {
                        self.bytes += size(&key, &o.value);
                    }
                    let now = match old {
                        Some(o) => self.entries.insert(key.clone(), o),
                        None => self.entries.remove(&key),
                    };
                    if let Some(n) = &now {
                        self.bytes -= size(&key, &n.value);
                    }
                }
                Undo::TimerAdded(t) => {
                    self.timers.remove(&t);
                }
                Undo::TimerRemoved(t) => {
                    self.timers.insert(t);
                }
                Undo::StreamTime(t) => self.stream_time = t,
                Undo::Fired(n) => self.fired = n,
            }
        }
    }

    /// Rebuilds the byte count after a restore.
    pub(super) fn recount(&mut self) {
        self.bytes = self.entries.iter().map(|(k, e)| size(k, &e.value)).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(lane: &mut LaneState, key: &str, value: &str, expires: Option<i64>) {
        lane.put_many(vec![(key.into(), value.into(), expires)], usize::MAX)
            .unwrap();
    }

    #[test]
    fn values_expire_and_scans_keep_key_order_within_a_prefix() {
        let mut lane = LaneState::default();
        put(&mut lane, "w1/b", "2", None);
        put(&mut lane, "w1/a", "1", None);
        put(&mut lane, "w2/a", "3", None);
        put(&mut lane, "w1/c", "x", Some(100));
        assert_eq!(lane.get(b"w1/c", 99), Some(&b"x"[..]));
        assert_eq!(lane.get(b"w1/c", 100), None);
        let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| {
            v.into_iter()
                .map(|(k, _)| String::from_utf8(k).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(lane.scan(b"w1/", None, 10, 0)),
            ["w1/a", "w1/b", "w1/c"]
        );
        assert_eq!(keys(lane.scan(b"w1/", None, 10, 200)), ["w1/a", "w1/b"]);
        assert_eq!(keys(lane.scan(b"w1/", Some(b"w1/a"), 1, 0)), ["w1/b"]);
        lane.expire(200);
        assert_eq!(lane.keys(), 3);
    }

    #[test]
    fn a_put_past_the_limit_puts_nothing() {
        let mut lane = LaneState::default();
        lane.put_many(vec![(b"a".to_vec(), vec![0; 40], None)], 100)
            .unwrap();
        let err = lane
            .put_many(
                vec![
                    (b"b".to_vec(), vec![0; 10], None),
                    (b"c".to_vec(), vec![0; 40], None),
                ],
                100,
            )
            .unwrap_err();
        assert!(
            err.would > 100 && err.to_string().contains("state_limit="),
            "{err}"
        );
        assert_eq!(lane.keys(), 1);
        // Replacing a value with a smaller one always fits.
        lane.put_many(vec![(b"a".to_vec(), vec![0; 10], None)], 10)
            .unwrap();
    }

    #[test]
    fn a_failed_call_leaves_nothing_behind() {
        let mut lane = LaneState::default();
        put(&mut lane, "k", "before", None);
        lane.observe(10);
        lane.keep();
        let bytes = lane.bytes();
        put(&mut lane, "k", "during", None);
        put(&mut lane, "new", "v", None);
        lane.delete(b"k");
        lane.observe(50);
        lane.register(Timer {
            at_ms: 60,
            domain: Domain::Event,
            key: b"t".to_vec(),
        });
        lane.undo();
        assert_eq!(lane.get(b"k", 0), Some(&b"before"[..]));
        assert_eq!(lane.get(b"new", 0), None);
        assert_eq!((lane.stream_time(), lane.timers_pending()), (Some(10), 0));
        assert_eq!(lane.bytes(), bytes);
    }

    #[test]
    fn timers_are_one_per_key_and_time_and_fire_in_time_order_never_early() {
        let mut lane = LaneState::default();
        let timer = |at_ms, domain, key: &str| Timer {
            at_ms,
            domain,
            key: key.into(),
        };
        lane.register(timer(120, Domain::Event, "b"));
        lane.register(timer(60, Domain::Event, "a"));
        lane.register(timer(60, Domain::Event, "a"));
        lane.register(timer(1_000, Domain::Processing, "p"));
        assert_eq!(lane.timers_pending(), 3);
        // No event time yet: nothing event-time is due.
        assert!(lane.take_due(0, 10).is_empty());
        lane.observe(59);
        assert!(lane.take_due(0, 10).is_empty(), "stream time before 60");
        lane.observe(60);
        assert_eq!(lane.take_due(0, 10), [timer(60, Domain::Event, "a")]);
        assert!(!lane.processing_due(999));
        assert_eq!(lane.take_due(999, 10), []);
        assert!(lane.processing_due(1_000));
        assert_eq!(
            lane.take_due(1_000, 10),
            [timer(1_000, Domain::Processing, "p")]
        );
        assert_eq!(lane.fired, 2);
    }
}
