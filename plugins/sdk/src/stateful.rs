//! Stateful plugins: keyed state and timers of the source lane being processed (a Kafka
//! partition, an object, stdin), kept by the host across restarts, swaps and rebalances.
//!
//! ```
//! use sluice_sdk::{Config, Context, Error, Fired, IntoOutputs, Message, MemoryState, Stateful};
//!
//! /// Counts records per value; says the count once a minute of event time has passed.
//! struct Count;
//!
//! impl Stateful for Count {
//!     fn init(_: &Config) -> Result<Self, Error> {
//!         Ok(Count)
//!     }
//!
//!     fn process<'a>(&mut self, msg: Message<'a>, ctx: &mut Context<'_>) -> Result<impl IntoOutputs<'a>, Error> {
//!         let n = ctx.get(&msg.value).map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
//!         ctx.put(&msg.value, &(n + 1).to_le_bytes());
//!         ctx.register_event_timer(&msg.value, 60_000);
//!         Ok(None::<Message<'a>>)
//!     }
//!
//!     fn on_timer(&mut self, timer: &Fired, ctx: &mut Context<'_>) -> Result<Vec<Message<'static>>, Error> {
//!         let n = ctx.get(&timer.key).map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
//!         ctx.delete(&timer.key);
//!         Ok(vec![Message::new(format!("{n}").into_bytes())])
//!     }
//! }
//!
//! // Natively, a MemoryState stands in for the host: the logic tests without wasm.
//! let mut state = MemoryState::default();
//! let mut count = Count;
//! for _ in 0..3 {
//!     state.process(&mut count, Message::new(&b"a"[..]).with_timestamp_ms(1_000)).unwrap();
//! }
//! state.observe(60_000);
//! let fired = state.fire_due(&mut count, 0).unwrap();
//! assert_eq!(&*fired[0].value, b"3");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::{Config, Error, IntoOutputs, Message};

/// Event time (the lane's stream time: the highest event time seen) or processing time (the
/// wall clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    EventTime,
    ProcessingTime,
}

/// A timer that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub key: Vec<u8>,
    pub at_ms: i64,
    pub domain: Domain,
}

/// A transform with keyed state and timers (the `stateful` world), exported with
/// [`stateful!`](crate::stateful!).
pub trait Stateful: Sized + 'static {
    /// Builds the plugin from its settings; an error stops it from loading.
    fn init(settings: &Config) -> Result<Self, Error>;

    /// One message in, with its lane's state and timers. State changes made while handling a
    /// message that then fails are not kept.
    fn process<'a>(
        &mut self,
        msg: Message<'a>,
        ctx: &mut Context<'_>,
    ) -> Result<impl IntoOutputs<'a>, Error>;

    /// A timer of the lane fired: its outputs go where `process`'s go.
    fn on_timer(
        &mut self,
        timer: &Fired,
        ctx: &mut Context<'_>,
    ) -> Result<Vec<Message<'static>>, Error>;

    /// Before this version takes over another version's state (a hot swap): entries of that
    /// state (key, value). An error refuses the swap and the running version stays. By default
    /// every state is accepted; a plugin whose keys or values have a format checks it here.
    fn check_state(&self, sample: &[(Vec<u8>, Vec<u8>)]) -> Result<(), Error> {
        let _ = sample;
        Ok(())
    }
}

/// What the host keeps for a stateful plugin; [`MemoryState`] natively.
pub trait StateHost {
    fn get_many(&mut self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>>;
    /// (key, value, ttl in ms; 0 = none): all or none.
    fn put_many(&mut self, entries: Vec<(Vec<u8>, Vec<u8>, u64)>) -> Result<(), String>;
    fn delete_many(&mut self, keys: Vec<Vec<u8>>);
    fn scan(&mut self, prefix: &[u8], after: Option<&[u8]>, max: u32) -> Vec<(Vec<u8>, Vec<u8>)>;
    fn register(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain);
    fn delete_timer(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain);
    fn observe(&mut self, at_ms: i64);
    fn stream_time(&mut self) -> Option<i64>;
}

enum TimerOp {
    Register(Vec<u8>, i64, Domain),
    Delete(Vec<u8>, i64, Domain),
}

/// The lane's state and timers while one message or timer is handled. Writes are kept here and
/// handed to the host in one call when the message succeeds; a message that fails leaves
/// nothing behind.
pub struct Context<'h> {
    host: &'h mut dyn StateHost,
    /// Key -> the value put (with its TTL), or `None` for a delete.
    writes: BTreeMap<Vec<u8>, Option<(Vec<u8>, u64)>>,
    timers: Vec<TimerOp>,
    event_time: Option<i64>,
}

/// Entries a scan asks the host for at a time.
const SCAN_PAGE: u32 = 256;

impl<'h> Context<'h> {
    pub fn new(host: &'h mut dyn StateHost) -> Self {
        Context {
            host,
            writes: BTreeMap::new(),
            timers: Vec::new(),
            event_time: None,
        }
    }

    /// The value of `key`, unless absent or expired.
    pub fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(w) => w.as_ref().map(|(v, _)| v.clone()),
            None => self.host.get_many(&[key.to_vec()]).pop().flatten(),
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.writes.insert(key.to_vec(), Some((value.to_vec(), 0)));
    }

    /// Puts a value that expires `ttl` after it is put (processing time).
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.writes.insert(key.to_vec(), Some((value.to_vec(), ms)));
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }

    /// Every live entry whose key starts with `prefix`, in key order (this message's writes
    /// included).
    pub fn scan(&mut self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.host.scan(prefix, after.as_deref(), SCAN_PAGE);
            let full = page.len() == SCAN_PAGE as usize;
            after = page.last().map(|(k, _)| k.clone());
            found.extend(page);
            if !full {
                break;
            }
        }
        for (k, w) in self.writes.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match w {
                Some((v, _)) => found.insert(k.clone(), v.clone()),
                None => found.remove(k),
            };
        }
        found.into_iter().collect()
    }

    /// A timer for `key` once stream time reaches `at_ms`; the same key and time twice is one.
    pub fn register_event_timer(&mut self, key: &[u8], at_ms: i64) {
        self.timers
            .push(TimerOp::Register(key.to_vec(), at_ms, Domain::EventTime));
    }

    /// A timer for `key` once the wall clock reaches `at_ms`.
    pub fn register_processing_timer(&mut self, key: &[u8], at_ms: i64) {
        self.timers.push(TimerOp::Register(
            key.to_vec(),
            at_ms,
            Domain::ProcessingTime,
        ));
    }

    pub fn delete_timer(&mut self, key: &[u8], at_ms: i64, domain: Domain) {
        self.timers
            .push(TimerOp::Delete(key.to_vec(), at_ms, domain));
    }

    /// The event time of the message, as the plugin reads it (a field of its value): moves the
    /// lane's stream time forward once the message succeeds.
    pub fn observe_event_time(&mut self, at_ms: i64) {
        self.event_time = Some(self.event_time.map_or(at_ms, |t| t.max(at_ms)));
    }

    /// The lane's stream time before this message: the highest event time seen.
    pub fn stream_time(&mut self) -> Option<i64> {
        self.host.stream_time()
    }

    /// Hands the message's writes to the host; an error (past the lane's state limit) fails
    /// the message.
    pub fn commit(self) -> Result<(), Error> {
        let Context {
            host,
            writes,
            timers,
            event_time,
        } = self;
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        for (k, w) in writes {
            match w {
                Some((v, ttl)) => puts.push((k, v, ttl)),
                None => deletes.push(k),
            }
        }
        if !puts.is_empty() {
            host.put_many(puts).map_err(Error::new)?;
        }
        if !deletes.is_empty() {
            host.delete_many(deletes);
        }
        for op in timers {
            match op {
                TimerOp::Register(k, at, d) => host.register(k, at, d),
                TimerOp::Delete(k, at, d) => host.delete_timer(k, at, d),
            }
        }
        if let Some(t) = event_time {
            host.observe(t);
        }
        Ok(())
    }
}

/// The host's part for native tests of a stateful plugin: state in memory, event time from
/// messages' timestamps and [`MemoryState::observe`], processing time as the test says.
#[derive(Debug, Default)]
pub struct MemoryState {
    entries: BTreeMap<Vec<u8>, (Vec<u8>, Option<i64>)>,
    timers: BTreeSet<(i64, Domain, Vec<u8>)>,
    stream_time: Option<i64>,
    /// Processing time, for TTLs.
    pub now_ms: i64,
}

impl MemoryState {
    /// Hands one message to the plugin as the host does: its state changes kept if it
    /// succeeds, its timestamp (if any) moving stream time on after it.
    pub fn process<'a, S: Stateful>(
        &mut self,
        plugin: &mut S,
        msg: Message<'a>,
    ) -> Result<Vec<Message<'a>>, Error> {
        let ts = msg.timestamp_ms;
        let mut ctx = Context::new(self);
        let out = plugin.process(msg, &mut ctx)?.into_messages();
        ctx.commit()?;
        if let Some(ts) = ts {
            self.observe(ts);
        }
        Ok(out)
    }

    /// Moves stream time on, as a record's event time does.
    pub fn observe(&mut self, at_ms: i64) {
        self.stream_time = Some(self.stream_time.map_or(at_ms, |t| t.max(at_ms)));
    }

    /// Fires the timers due at stream time and processing time `now_ms`, in time order, and
    /// returns their outputs.
    pub fn fire_due<S: Stateful>(
        &mut self,
        plugin: &mut S,
        now_ms: i64,
    ) -> Result<Vec<Message<'static>>, Error> {
        self.now_ms = now_ms;
        let mut out = Vec::new();
        loop {
            let stream = self.stream_time;
            let Some(next) = self
                .timers
                .iter()
                .find(|(at, d, _)| match d {
                    Domain::EventTime => stream.is_some_and(|t| *at <= t),
                    Domain::ProcessingTime => *at <= now_ms,
                })
                .cloned()
            else {
                return Ok(out);
            };
            self.timers.remove(&next);
            let fired = Fired {
                at_ms: next.0,
                domain: next.1,
                key: next.2,
            };
            let mut ctx = Context::new(self);
            let made = plugin.on_timer(&fired, &mut ctx)?;
            ctx.commit()?;
            out.extend(made);
        }
    }

    /// Timers registered and not fired yet.
    pub fn timers_pending(&self) -> usize {
        self.timers.len()
    }
}

impl StateHost for MemoryState {
    fn get_many(&mut self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        let now = self.now_ms;
        keys.iter()
            .map(|k| {
                self.entries
                    .get(k)
                    .filter(|(_, exp)| exp.is_none_or(|t| t > now))
                    .map(|(v, _)| v.clone())
            })
            .collect()
    }

    fn put_many(&mut self, entries: Vec<(Vec<u8>, Vec<u8>, u64)>) -> Result<(), String> {
        for (k, v, ttl) in entries {
            let expires = (ttl > 0).then(|| self.now_ms.saturating_add(ttl as i64));
            self.entries.insert(k, (v, expires));
        }
        Ok(())
    }

    fn delete_many(&mut self, keys: Vec<Vec<u8>>) {
        for k in keys {
            self.entries.remove(&k);
        }
    }

    fn scan(&mut self, prefix: &[u8], after: Option<&[u8]>, max: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let now = self.now_ms;
        self.entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .filter(|(_, (_, exp))| exp.is_none_or(|t| t > now))
            .take(max as usize)
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    fn register(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
        self.timers.insert((at_ms, domain, key));
    }

    fn delete_timer(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
        self.timers.remove(&(at_ms, domain, key));
    }

    fn observe(&mut self, at_ms: i64) {
        MemoryState::observe(self, at_ms);
    }

    fn stream_time(&mut self) -> Option<i64> {
        self.stream_time
    }
}
