//! Sluice plugin (stateful): counts records per key fields in tumbling event-time windows.
//!
//! Settings: `window=60s` (the windows' length), `lateness=10s` (how long after its end a
//! window waits for records arriving late), `time_field=timestamp` (the event time: enrich's
//! `2026-11-25 17:03:31+0000`, RFC 3339, or epoch seconds or milliseconds), `keys=country,status`
//! (the fields counted by) and `count_field=sessions`. When stream time passes a window's end
//! plus the lateness, the window closes: one JSON record per key found in it,
//! `{"window_start": "…Z", "window_end": "…Z", "country": …, "status": …, "sessions": N}`.
//! A record for a window already closed is dropped (it is too late).
//!
//! State: one count per (window, key), under `w` + the window start (big-endian, so a window's
//! counts are one prefix) + the key fields; one event-time timer per window.

mod pick;
mod time;

use sluice_sdk::{Config, Context, Error, Fired, IntoOutputs, Message, Stateful};

pub struct Rollup {
    window_ms: i64,
    lateness_ms: i64,
    time_field: String,
    keys: Vec<String>,
    count_field: String,
    /// The time field, then the keys: what a record is read for.
    picked: Vec<String>,
}

/// `60s`, `500ms`, `2m`, `1h`; a bare number is seconds.
fn duration_ms(settings: &Config, key: &str, default_ms: i64) -> Result<i64, Error> {
    let Some(text) = settings.get(key) else {
        return Ok(default_ms);
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| {
        Error::new(format!(
            "setting `{key}={text}` is not a duration (e.g. 60s, 2m)"
        ))
    })?;
    let unit_ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(Error::new(format!(
                "setting `{key}={text}`: use ms, s, m or h"
            )))
        }
    };
    Ok(n.saturating_mul(unit_ms))
}

/// The state key of a window (its counts' prefix, and its timer's key).
fn window_key(start_ms: i64) -> Vec<u8> {
    let mut key = vec![b'w'];
    // Sign flipped: windows before 1970 still sort before those after.
    key.extend_from_slice(&((start_ms as u64) ^ (1 << 63)).to_be_bytes());
    key
}

fn window_start(key: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

fn count_of(value: Option<Vec<u8>>) -> u64 {
    value
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

impl Stateful for Rollup {
    fn init(settings: &Config) -> Result<Self, Error> {
        let window_ms = duration_ms(settings, "window", 60_000)?;
        if window_ms <= 0 {
            return Err(Error::new("setting `window` must be longer than 0"));
        }
        let keys: Vec<String> = settings
            .get("keys")
            .unwrap_or("country,status")
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        let time_field = settings.get("time_field").unwrap_or("timestamp").to_owned();
        Ok(Rollup {
            window_ms,
            lateness_ms: duration_ms(settings, "lateness", 10_000)?.max(0),
            picked: std::iter::once(time_field.clone())
                .chain(keys.iter().cloned())
                .collect(),
            time_field,
            keys,
            count_field: settings.get("count_field").unwrap_or("sessions").to_owned(),
        })
    }

    fn process<'a>(
        &mut self,
        msg: Message<'a>,
        ctx: &mut Context<'_>,
    ) -> Result<impl IntoOutputs<'a>, Error> {
        let picked = pick::fields(&msg.value, &self.picked)
            .map_err(|e| Error::new(format!("not a JSON record: {e}")))?;
        let at = picked[0]
            .as_ref()
            .and_then(|f| time::parse_ms(&f.to_value()))
            .ok_or_else(|| {
                Error::new(format!(
                    "no event time: field `{}` is missing or not a timestamp (RFC 3339, \
                     `YYYY-MM-DD HH:MM:SS+0000` or epoch seconds)",
                    self.time_field
                ))
            })?;
        let start = at.div_euclid(self.window_ms) * self.window_ms;
        let closes = start + self.window_ms + self.lateness_ms;
        if ctx.stream_time().is_some_and(|t| t >= closes) {
            return Ok(None::<Message<'a>>); // its window closed already: too late to count
        }
        ctx.observe_event_time(at);
        let mut key = window_key(start);
        for (i, field) in picked[1..].iter().enumerate() {
            if i > 0 {
                key.push(0);
            }
            match field {
                Some(pick::Field::Text(s)) => key.extend_from_slice(s.as_bytes()),
                Some(pick::Field::Other(serde_json::Value::Null)) | None => {}
                Some(pick::Field::Other(other)) => {
                    key.extend_from_slice(other.to_string().as_bytes())
                }
            }
        }
        let n = count_of(ctx.get(&key)) + 1;
        ctx.put(&key, &n.to_le_bytes());
        ctx.register_event_timer(&window_key(start), closes);
        Ok(None::<Message<'a>>)
    }

    fn on_timer(
        &mut self,
        timer: &Fired,
        ctx: &mut Context<'_>,
    ) -> Result<Vec<Message<'static>>, Error> {
        let start = window_start(&timer.key)
            .ok_or_else(|| Error::new("a timer of another plugin version"))?;
        let end = start + self.window_ms;
        let (from, to) = (time::format_ms(start), time::format_ms(end));
        let mut out = Vec::new();
        for (key, value) in ctx.scan(&timer.key) {
            let mut record = serde_json::Map::new();
            record.insert("window_start".into(), from.clone().into());
            record.insert("window_end".into(), to.clone().into());
            for (field, part) in self.keys.iter().zip(key[9..].split(|b| *b == 0)) {
                record.insert(
                    field.clone(),
                    String::from_utf8_lossy(part).into_owned().into(),
                );
            }
            record.insert(self.count_field.clone(), count_of(Some(value)).into());
            ctx.delete(&key);
            let text = serde_json::Value::Object(record).to_string();
            out.push(Message::new(text.into_bytes()).with_timestamp_ms(end));
        }
        Ok(out)
    }

    /// Counts are kept under a window key and this version's key fields, 8 bytes each, in
    /// windows of this version's length: state kept with other `keys=` or `window=`, or by
    /// another plugin, is refused.
    fn check_state(&self, sample: &[(Vec<u8>, Vec<u8>)]) -> Result<(), Error> {
        for (key, value) in sample {
            let shown = || String::from_utf8_lossy(key).into_owned();
            let start = window_start(key)
                .filter(|_| key[0] == b'w')
                .ok_or_else(|| Error::new(format!("key {:?} is not a window's", shown())))?;
            if value.len() != 8 {
                return Err(Error::new(format!(
                    "key {:?} holds {} bytes, not a count",
                    shown(),
                    value.len()
                )));
            }
            if start % self.window_ms != 0 {
                return Err(Error::new(format!(
                    "a window starts at {} ms, which window={} ms does not divide: the state \
                     was kept with another window length",
                    start, self.window_ms
                )));
            }
            let parts = key[9..].split(|b| *b == 0).count();
            if parts != self.keys.len().max(1) {
                return Err(Error::new(format!(
                    "the state counts per {parts} key field(s), this version per {} ({}): \
                     keep keys= as it was",
                    self.keys.len(),
                    self.keys.join(",")
                )));
            }
        }
        Ok(())
    }
}

sluice_sdk::stateful!(Rollup);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::MemoryState;

    fn rollup(settings: &[(&str, &str)]) -> Rollup {
        let pairs = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Rollup::init(&Config::new(pairs)).unwrap()
    }

    fn session(ts: &str, country: &str, status: &str) -> Message<'static> {
        let v = format!(r#"{{"timestamp":"{ts}","country":"{country}","status":"{status}"}}"#);
        Message::new(v.into_bytes())
    }

    #[test]
    fn windows_close_after_their_lateness_with_one_count_per_key() {
        let mut r = rollup(&[("window", "60s"), ("lateness", "10s")]);
        let mut state = MemoryState::default();
        for (ts, c, s) in [
            ("2026-12-01 10:00:05+0000", "Greece", "accepted"),
            ("2026-12-01 10:00:30+0000", "Greece", "accepted"),
            ("2026-12-01 10:00:59+0000", "Italy", "rejected"),
            ("2026-12-01 10:01:05+0000", "Greece", "accepted"),
        ] {
            assert!(state.process(&mut r, session(ts, c, s)).unwrap().is_empty());
        }
        // Stream time 10:01:05: the first window closes at 10:01:10.
        assert!(state.fire_due(&mut r, 0).unwrap().is_empty());
        state
            .process(
                &mut r,
                session("2026-12-01 10:01:10+0000", "Italy", "accepted"),
            )
            .unwrap();
        let closed: Vec<serde_json::Value> = state
            .fire_due(&mut r, 0)
            .unwrap()
            .iter()
            .map(|m| serde_json::from_slice(&m.value).unwrap())
            .collect();
        assert_eq!(
            closed,
            [
                serde_json::json!({"window_start":"2026-12-01T10:00:00Z","window_end":"2026-12-01T10:01:00Z","country":"Greece","status":"accepted","sessions":2}),
                serde_json::json!({"window_start":"2026-12-01T10:00:00Z","window_end":"2026-12-01T10:01:00Z","country":"Italy","status":"rejected","sessions":1}),
            ]
        );
        // A record for the closed window is too late; the next window still counts.
        state
            .process(
                &mut r,
                session("2026-12-01 10:00:50+0000", "Greece", "accepted"),
            )
            .unwrap();
        state.observe(1_796_119_330_000); // 10:02:10, when the 10:01 window closes
        let next = state.fire_due(&mut r, 0).unwrap();
        assert_eq!(next.len(), 2, "Greece/accepted and Italy/accepted of 10:01");
        assert_eq!(state.timers_pending(), 0);
    }

    #[test]
    fn a_record_without_event_time_fails_alone() {
        let mut r = rollup(&[]);
        let mut state = MemoryState::default();
        let err = state
            .process(&mut r, Message::new(&br#"{"country":"x"}"#[..]))
            .unwrap_err();
        assert!(err.message().contains("no event time"), "{err}");
        assert!(state.process(&mut r, Message::new(&b"{oops"[..])).is_err());
        assert_eq!(state.timers_pending(), 0);
    }

    #[test]
    fn it_reads_its_own_state_and_refuses_state_kept_otherwise() {
        let mut host = MemoryState::default();
        let mut r = rollup(&[]);
        host.process(
            &mut r,
            session("2026-12-01 10:00:05+0000", "FR", "accepted"),
        )
        .unwrap();
        let kept = sluice_sdk::StateHost::scan(&mut host, b"", None, u32::MAX);
        assert!(!kept.is_empty());
        r.check_state(&kept).unwrap();
        let e = rollup(&[("window", "7s")]).check_state(&kept).unwrap_err();
        assert!(
            e.message().contains("another window length"),
            "{}",
            e.message()
        );
        let e = rollup(&[("keys", "country")])
            .check_state(&kept)
            .unwrap_err();
        assert!(e.message().contains("keep keys="), "{}", e.message());
        let e = r
            .check_state(&[(b"session-1".to_vec(), vec![])])
            .unwrap_err();
        assert!(e.message().contains("not a window's"), "{}", e.message());
    }

    #[test]
    fn window_keys_sort_by_time_across_the_epoch() {
        assert!(window_key(-60_000) < window_key(0));
        assert!(window_key(0) < window_key(60_000));
        assert_eq!(window_start(&window_key(-60_000)), Some(-60_000));
    }
}
