//! Mock user sessions, as the stack's Python generator made them: one JSON object per session.
//!
//! Config: `seed` (u64: the same seed gives the same sessions for the same clock) and `rate`
//! (sessions per second of the host clock; unset = as many as the host asks for).

use std::fmt::Write as _;

use sluice_sdk::{Config, Error, Message, Source};

const DEVICES: [(&str, &[&str]); 5] = [
    ("Android", &["Android 12", "Android 13", "Android 14"]),
    ("iOS", &["iOS 16.7", "iOS 17.4", "iOS 18.1"]),
    ("Windows", &["Windows 10", "Windows 11"]),
    ("MacOS", &["macOS 13 Ventura", "macOS 14 Sonoma"]),
    ("Linux", &["Ubuntu 22.04", "Fedora 40", "Debian 12"]),
];

const GREECE: (f64, f64) = (39.0, 22.0);

/// The other country points of the stack's lookup table.
const ELSEWHERE: [(f64, f64); 20] = [
    (43.0, 25.0),
    (41.0, 20.0),
    (35.0, 33.0),
    (54.0, -2.0),
    (38.0, -97.0),
    (51.0, 9.0),
    (46.0, 2.0),
    (42.8333, 12.8333),
    (44.0, 21.0),
    (45.1667, 15.5),
    (52.5, 5.75),
    (39.0, 35.0),
    (40.0, -4.0),
    (52.0, 20.0),
    (39.5, -8.0),
    (62.0, 15.0),
    (49.75, 15.5),
    (56.0, 10.0),
    (47.3333, 13.3333),
    (59.0, 26.0),
];

const LATER_EVENTS: [&str; 3] = ["view_item", "add_to_cart", "checkout"];

/// xoshiro256** seeded through splitmix64: small, fast and reproducible everywhere.
pub struct Rng([u64; 4]);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }

    fn uuid_v4(&mut self, out: &mut String) {
        let (a, b) = (self.next_u64(), self.next_u64());
        let a = (a & !0xf000) | 0x4000; // version 4
        let b = (b & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
        let _ = write!(
            out,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        );
    }
}

/// One session as a JSON object, stamped at `epoch_seconds`.
pub fn session(rng: &mut Rng, epoch_seconds: i64) -> String {
    let mut s = String::with_capacity(512);
    s.push_str("{\"session_id\":\"");
    rng.uuid_v4(&mut s);
    s.push_str("\",\"user_id\":\"");
    rng.uuid_v4(&mut s);
    s.push_str("\",\"device_id\":\"");
    rng.uuid_v4(&mut s);
    let (device, systems) = *rng.pick(&DEVICES);
    let os = rng.pick(systems);
    let version = (rng.range(1, 5), rng.range(0, 9), rng.range(0, 20));
    let duration = rng.range(1, 600);
    let (clicks, views) = (rng.range(1, 100), rng.range(1, 100));
    let (lat, lon) = if rng.range(0, 1) == 0 {
        GREECE
    } else {
        *rng.pick(&ELSEWHERE)
    };
    let _ = write!(
        s,
        "\",\"device_type\":\"{device}\",\"operating_system\":\"{os}\",\"app_version\":\"{}.{}.{}\",\
         \"timestamp\":{epoch_seconds},\"session_duration\":{duration},\"clicks\":{clicks},\"views\":{views},\
         \"latitude\":{lat:?},\"longitude\":{lon:?},\"events\":[{{\"event_type\":\"login\",\"timestamp\":{epoch_seconds}}}",
        version.0, version.1, version.2
    );
    // Later events happen in order, within the session.
    let mut at = epoch_seconds;
    let end = epoch_seconds + duration as i64;
    for event in LATER_EVENTS.iter().take(rng.range(0, 3) as usize) {
        at += rng.range(0, (end - at) as u64) as i64;
        let _ = write!(s, ",{{\"event_type\":\"{event}\",\"timestamp\":{at}}}");
    }
    s.push_str("]}");
    s
}

/// The generator's state.
pub struct MockSessions {
    rng: Rng,
    rate: Option<f64>,
    started_ms: Option<i64>,
    emitted: u64,
}

impl Source for MockSessions {
    fn init(config: &Config) -> Result<Self, Error> {
        let seed = match config.parse::<u64>("seed")? {
            Some(seed) => seed,
            // No seed: draw one from the randomness the host grants (WASI random, via std).
            None => {
                use std::hash::{BuildHasher, Hasher};
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            }
        };
        let rate = config.parse::<f64>("rate")?;
        if let Some(r) = rate {
            if !(r.is_finite() && r >= 0.0) {
                return Err(Error::new(format!(
                    "setting `rate={r}` must be a number of sessions per second >= 0"
                )));
            }
        }
        Ok(MockSessions {
            rng: Rng::seeded(seed),
            rate: rate.filter(|r| *r > 0.0),
            started_ms: None,
            emitted: 0,
        })
    }

    fn next(&mut self, max: u32, now_ms: i64) -> Result<Vec<Message<'static>>, Error> {
        let started = *self.started_ms.get_or_insert(now_ms);
        let due = match self.rate {
            // One right away, then `rate` per second of host time.
            Some(rate) => {
                let total = 1 + ((now_ms - started).max(0) as f64 * rate / 1000.0) as u64;
                total.saturating_sub(self.emitted).min(u64::from(max))
            }
            None => u64::from(max),
        };
        self.emitted += due;
        let secs = now_ms.div_euclid(1000);
        Ok((0..due)
            .map(|_| {
                Message::new(session(&mut self.rng, secs).into_bytes()).with_timestamp_ms(now_ms)
            })
            .collect())
    }
}

sluice_sdk::source!(MockSessions);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn sessions_have_the_stack_schema() {
        let mut rng = Rng::seeded(1);
        let mut greece = 0;
        for _ in 0..2000 {
            let v: Value = serde_json::from_str(&session(&mut rng, 1_700_000_000)).unwrap();
            for id in ["session_id", "user_id", "device_id"] {
                let s = v[id].as_str().unwrap();
                assert_eq!(s.len(), 36);
                assert_eq!(&s[14..15], "4", "{s} is not a v4 UUID");
                assert!("89ab".contains(&s[19..20]), "{s} has the wrong variant");
            }
            assert!(DEVICES.iter().any(|(d, _)| v["device_type"] == *d));
            assert_eq!(v["app_version"].as_str().unwrap().split('.').count(), 3);
            assert_eq!(v["timestamp"], 1_700_000_000);
            assert!((1..=600).contains(&v["session_duration"].as_u64().unwrap()));
            assert!((1..=100).contains(&v["clicks"].as_u64().unwrap()));
            assert!((1..=100).contains(&v["views"].as_u64().unwrap()));
            let point = (
                v["latitude"].as_f64().unwrap(),
                v["longitude"].as_f64().unwrap(),
            );
            if point == GREECE {
                greece += 1;
            } else {
                assert!(ELSEWHERE.contains(&point), "{point:?}");
            }
            let events = v["events"].as_array().unwrap();
            assert_eq!(events[0]["event_type"], "login");
            let times: Vec<i64> = events
                .iter()
                .map(|e| e["timestamp"].as_i64().unwrap())
                .collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
        }
        assert!((800..1200).contains(&greece), "Greece {greece} of 2000");
    }

    #[test]
    fn same_seed_same_sessions() {
        let run = |seed| {
            let mut m = MockSessions::init(&config(&[("seed", seed)])).unwrap();
            m.next(50, 1_700_000_000_000).unwrap()
        };
        assert_eq!(run("7"), run("7"));
        assert_ne!(run("7"), run("8"));
    }

    #[test]
    fn rate_paces_by_host_clock() {
        let mut m = MockSessions::init(&config(&[("seed", "1"), ("rate", "10")])).unwrap();
        assert_eq!(m.next(100, 0).unwrap().len(), 1);
        assert_eq!(m.next(100, 50).unwrap().len(), 0);
        assert_eq!(m.next(100, 1000).unwrap().len(), 10);
        assert_eq!(m.next(3, 2000).unwrap().len(), 3);
    }

    #[test]
    fn bad_config_is_refused_with_its_name() {
        let err = MockSessions::init(&config(&[("seed", "abc")]))
            .err()
            .unwrap();
        assert!(err.message().contains("seed=abc"), "{err}");
        assert!(MockSessions::init(&config(&[("rate", "-1")])).is_err());
    }
}
