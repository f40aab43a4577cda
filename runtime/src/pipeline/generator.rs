//! A source plugin (such as the mock session generator) as a record source, paced to a rate.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::connector::{BoxFuture, Source, SourceBatch};
use crate::plugin::SourceInstance;
use crate::record::Origin;

/// A token bucket: `rate` records per second, handed out in batches worth about 10 ms.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// `rate` records per second; 0 means no limit.
    pub(crate) fn new(rate: f64, now: Instant) -> Self {
        Pacer {
            rate,
            tokens: 0.0,
            last: now,
        }
    }

    /// How many records may go now (at most `max`), or how long to wait before asking again.
    pub(crate) fn grant(&mut self, now: Instant, max: u32) -> Result<u32, Duration> {
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
            return Err(Duration::from_secs_f64((want - self.tokens) / self.rate));
        }
        let n = (self.tokens.floor() as u32).min(max);
        self.tokens -= f64::from(n);
        Ok(n)
    }

    /// Gives back tokens a source did not use.
    pub(crate) fn refund(&mut self, n: u32) {
        self.tokens += f64::from(n);
    }
}

/// Pulls records from a source plugin.
pub(crate) struct PluginSource {
    instance: SourceInstance,
    pacer: Pacer,
    seq: u64,
    /// `PLUGIN@RUN`, where RUN is when this run started (ms since the epoch): positions
    /// (`PLUGIN@RUN#SEQ`) of different runs never collide, so objects named after them do not
    /// overwrite an earlier run's.
    run_name: Arc<str>,
}

/// How long to wait when the plugin has nothing due.
const IDLE_WAIT: Duration = Duration::from_millis(10);

impl PluginSource {
    pub(crate) fn new(instance: SourceInstance, rate: f64) -> Self {
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        // Start time and process: two generators started in the same millisecond by two
        // processes (writing one table, say) must not share positions.
        let run_name = format!("{}@{run}-{}", instance.plugin().name, std::process::id()).into();
        PluginSource {
            instance,
            pacer: Pacer::new(rate, Instant::now()),
            seq: 0,
            run_name,
        }
    }

    async fn fill(&mut self, max: usize) -> Result<Option<SourceBatch>> {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        loop {
            let n = match self.pacer.grant(Instant::now(), max) {
                Ok(n) => n,
                Err(wait) => {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let mut records = tokio::task::block_in_place(|| self.instance.next(n, now_ms))?;
            self.pacer.refund(n - records.len() as u32);
            if records.is_empty() {
                tokio::time::sleep(IDLE_WAIT).await;
                continue;
            }
            for r in &mut records {
                self.seq += 1;
                if r.origin.is_none() {
                    r.origin = Some(Origin::At(self.run_name.clone(), '#', self.seq));
                }
            }
            return Ok(Some(SourceBatch {
                records,
                ..Default::default()
            }));
        }
    }
}

impl Source for PluginSource {
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(self.fill(max))
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
