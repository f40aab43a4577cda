//! The host as one `process` or `on-timer` call sees it. Nothing but this call changes the
//! lane's state and timers while it runs, so values read or written are kept for the rest of the
//! call, stream time is asked for once and moved on once (at the end), and a timer registered
//! again is registered once. A rollup that reads, writes, registers and observes per message
//! then crosses into the host about once per message instead of five times.

use std::collections::{HashMap, HashSet};

use crate::{Domain, StateHost};

pub(crate) struct CallHost<'h> {
    host: &'h mut dyn StateHost,
    /// Values as the host holds them now (`None`: absent).
    values: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The host's stream time at the start of the call, once asked for.
    stream_time: Option<Option<i64>>,
    /// The highest event time observed in this call, not yet handed to the host.
    observed: Option<i64>,
    /// Timers registered in this call since its last timer delete.
    registered: HashSet<(Vec<u8>, i64, Domain)>,
}

impl<'h> CallHost<'h> {
    pub fn new(host: &'h mut dyn StateHost) -> Self {
        CallHost {
            host,
            values: HashMap::new(),
            stream_time: None,
            observed: None,
            registered: HashSet::new(),
        }
    }

    /// Hands what was put off to the host: the call's stream time.
    pub fn finish(self) {
        if let Some(t) = self.observed {
            self.host.observe(t);
        }
    }
}

impl StateHost for CallHost<'_> {
    fn get_many(&mut self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        let missing: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| !self.values.contains_key(*k))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let found = self.host.get_many(&missing);
            self.values.extend(missing.into_iter().zip(found));
        }
        keys.iter()
            .map(|k| self.values.get(k).cloned().flatten())
            .collect()
    }

    fn put_many(&mut self, entries: Vec<(Vec<u8>, Vec<u8>, u64)>) -> Result<(), String> {
        let kept: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        self.host.put_many(entries)?;
        for (k, v) in kept {
            self.values.insert(k, Some(v));
        }
        Ok(())
    }

    fn delete_many(&mut self, keys: Vec<Vec<u8>>) {
        for k in &keys {
            self.values.insert(k.clone(), None);
        }
        self.host.delete_many(keys);
    }

    fn scan(&mut self, prefix: &[u8], after: Option<&[u8]>, max: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        // Writes reach the host as they are made, so its scan is current.
        self.host.scan(prefix, after, max)
    }

    fn register(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
        if self.registered.insert((key.clone(), at_ms, domain)) {
            self.host.register(key, at_ms, domain);
        }
    }

    fn delete_timer(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
        self.registered.clear();
        self.host.delete_timer(key, at_ms, domain);
    }

    fn observe(&mut self, at_ms: i64) {
        self.observed = Some(self.observed.map_or(at_ms, |t| t.max(at_ms)));
    }

    fn stream_time(&mut self) -> Option<i64> {
        let host = &mut self.host;
        let before = *self.stream_time.get_or_insert_with(|| host.stream_time());
        match (before, self.observed) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryState;

    /// A MemoryState that counts the calls made into it.
    #[derive(Default)]
    struct Counted {
        inner: MemoryState,
        calls: usize,
    }

    impl StateHost for Counted {
        fn get_many(&mut self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
            self.calls += 1;
            self.inner.get_many(keys)
        }
        fn put_many(&mut self, entries: Vec<(Vec<u8>, Vec<u8>, u64)>) -> Result<(), String> {
            self.calls += 1;
            self.inner.put_many(entries)
        }
        fn delete_many(&mut self, keys: Vec<Vec<u8>>) {
            self.calls += 1;
            self.inner.delete_many(keys)
        }
        fn scan(&mut self, p: &[u8], a: Option<&[u8]>, max: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
            self.calls += 1;
            self.inner.scan(p, a, max)
        }
        fn register(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
            self.calls += 1;
            self.inner.register(key, at_ms, domain)
        }
        fn delete_timer(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
            self.calls += 1;
            self.inner.delete_timer(key, at_ms, domain)
        }
        fn observe(&mut self, at_ms: i64) {
            self.calls += 1;
            self.inner.observe(at_ms)
        }
        fn stream_time(&mut self) -> Option<i64> {
            self.calls += 1;
            self.inner.stream_time()
        }
    }

    /// Per message: read a counter, add one, register the same timer, observe a time.
    fn count(host: &mut dyn StateHost, key: &[u8], at: i64) {
        let n = host.get_many(&[key.to_vec()])[0]
            .as_ref()
            .map_or(0, |v| v[0]);
        host.put_many(vec![(key.to_vec(), vec![n + 1], 0)]).unwrap();
        host.register(b"timer".to_vec(), 60, Domain::EventTime);
        host.observe(at);
    }

    #[test]
    fn a_call_reads_a_key_once_registers_a_timer_once_and_observes_once() {
        let mut host = Counted::default();
        let mut call = CallHost::new(&mut host);
        for at in 0..100 {
            count(&mut call, b"a", at);
        }
        assert_eq!(
            call.stream_time(),
            Some(99),
            "the call's own observations count"
        );
        call.finish();
        // One read, one stream time, one timer, one observe, a put per message.
        assert_eq!(host.calls, 100 + 4);
        assert_eq!(host.inner.get_many(&[b"a".to_vec()])[0], Some(vec![100]));
        assert_eq!(host.inner.stream_time(), Some(99));
        assert_eq!(host.inner.timers_pending(), 1);
    }

    #[test]
    fn what_a_call_wrote_or_deleted_is_what_it_reads_back() {
        let mut host = MemoryState::default();
        host.put_many(vec![(b"k".to_vec(), b"old".to_vec(), 0)])
            .unwrap();
        let mut call = CallHost::new(&mut host);
        assert_eq!(call.get_many(&[b"k".to_vec()])[0], Some(b"old".to_vec()));
        call.put_many(vec![(b"k".to_vec(), b"new".to_vec(), 0)])
            .unwrap();
        assert_eq!(call.get_many(&[b"k".to_vec()])[0], Some(b"new".to_vec()));
        call.delete_many(vec![b"k".to_vec()]);
        assert_eq!(call.get_many(&[b"k".to_vec()])[0], None);
        assert_eq!(call.scan(b"", None, 10), vec![]);
    }

    #[test]
    fn a_timer_deleted_then_registered_again_is_registered() {
        let mut host = MemoryState::default();
        let mut call = CallHost::new(&mut host);
        call.register(b"t".to_vec(), 5, Domain::EventTime);
        call.delete_timer(b"t".to_vec(), 5, Domain::EventTime);
        call.register(b"t".to_vec(), 5, Domain::EventTime);
        call.finish();
        assert_eq!(host.timers_pending(), 1);
    }

    #[test]
    fn stream_time_is_the_hosts_until_the_call_observes_later() {
        let mut host = MemoryState::default();
        host.observe(50);
        let mut call = CallHost::new(&mut host);
        call.observe(10);
        assert_eq!(call.stream_time(), Some(50));
        call.observe(70);
        assert_eq!(call.stream_time(), Some(70));
        call.finish();
        assert_eq!(host.stream_time(), Some(70));
    }
}
