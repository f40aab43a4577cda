//! `--rate`: a token bucket the read loop asks before each batch, so any source (a generator
//! plugin, a bucket backfill, a topic) produces at most so many records per second.

use std::time::{Duration, Instant};

/// A token bucket: `rate` records per second, handed out in batches worth about 10 ms.
#[derive(Debug)]
pub(super) struct Pacer {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// `rate` records per second; 0 means no limit.
    pub(super) fn new(rate: f64, now: Instant) -> Self {
        Pacer {
            rate,
            tokens: 0.0,
            last: now,
        }
    }

    /// How many records may go now (at most `max`), or how long to wait before asking again.
    pub(super) fn grant(&mut self, now: Instant, max: u32) -> Result<u32, Duration> {
        if self.rate <= 0.0 {
            return Ok(max);
        }
        // Small batches at low rates, ~10 ms worth at high rates; no bursts after a stall.
        let want = (self.rate * 0.01).clamp(1.0, f64::from(max.max(1)));
        let cap = want.max((self.rate * 0.1).min(f64::from(max.max(1))));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(cap);
        if self.tokens < want {
            // Asked again within a second at most: a tiny rate never makes a timer overflow.
            let wait = ((want - self.tokens) / self.rate).min(1.0);
            return Err(Duration::from_secs_f64(wait));
        }
        let n = (self.tokens.floor() as u32).min(max);
        self.tokens -= f64::from(n);
        Ok(n)
    }

    /// Gives back tokens a source did not use.
    pub(super) fn refund(&mut self, n: u32) {
        self.tokens += f64::from(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_keeps_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000.0, t0);
        let mut granted = 0;
        let mut now = t0;
        // Simulate one second of asking every millisecond.
        for _ in 0..1000 {
            now += Duration::from_millis(1);
            if let Ok(n) = p.grant(now, 256) {
                granted += n;
            }
        }
        assert!(
            (990..=1000).contains(&granted),
            "granted {granted} in one simulated second"
        );
    }

    #[test]
    fn pacer_waits_and_does_not_burst_after_a_stall() {
        let t0 = Instant::now();
        let mut p = Pacer::new(333.0, t0);
        let wait = p.grant(t0, 256).unwrap_err();
        // ~10 ms worth of records per batch: 3.33 records at 333/s.
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(11),
            "{wait:?}"
        );
        let n = p.grant(t0 + Duration::from_secs(60), 256).unwrap();
        assert!(n <= 34, "burst of {n} after a stall");
        assert_eq!(Pacer::new(0.0, t0).grant(t0, 77), Ok(77));
    }
}
