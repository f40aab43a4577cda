//! A pipeline's counters over the last minutes, sampled once a second: records per second for
//! the console's chart, and batch latency quantiles over the last minute (the histogram since
//! the start says little about now).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use super::{PipelineMetrics, LATENCY_BUCKETS};

/// How often the admin listener samples; the console plots one point per sample.
pub const SAMPLE_EVERY_MS: u64 = 1000;
/// Samples kept: five minutes at one a second.
const KEPT: usize = 300;
/// Latency quantiles cover this many of the newest samples.
const LATENCY_WINDOW: usize = 60;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ms: i64,
    records_in: u64,
    records_out: u64,
    records_failed: u64,
    /// Cumulative batch counts at or under each of LATENCY_BUCKETS, then all batches.
    batches: [u64; LATENCY_BUCKETS.len() + 1],
}

impl Sample {
    fn of(p: &PipelineMetrics, at_ms: i64) -> Self {
        let mut batches = [0; LATENCY_BUCKETS.len() + 1];
        for (b, bucket) in batches.iter_mut().zip(&p.latency_buckets) {
            *b = bucket.load(Relaxed);
        }
        batches[LATENCY_BUCKETS.len()] = p.latency_count.load(Relaxed);
        Sample {
            at_ms,
            records_in: p.records_in.load(Relaxed),
            records_out: p.records_out.load(Relaxed),
            records_failed: p.records_failed.load(Relaxed),
            batches,
        }
    }
}

/// One pipeline's samples, oldest first.
#[derive(Debug, Default)]
pub struct History(VecDeque<Sample>);

/// What the samples say, as the admin API's `GET /overview` shows it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Recent {
    pub rates: Rates,
    /// Batches in the last minute, and their latency quantiles in milliseconds (None without
    /// batches; over 1 s shows as the largest bucket bound, 1000).
    pub batches: u64,
    pub batch_p50_ms: Option<f64>,
    pub batch_p99_ms: Option<f64>,
}

/// Records per second between consecutive samples, oldest first, the last one ending at
/// `last_ms`, `step_ms` apart. Sent once a second for every pipeline, so kept short: one
/// series per counter, each value to a tenth (`100`, not `100.0`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Rates {
    pub last_ms: i64,
    pub step_ms: u64,
    #[serde(rename = "in", serialize_with = "tenths")]
    pub records_in: Vec<f64>,
    #[serde(rename = "out", serialize_with = "tenths")]
    pub records_out: Vec<f64>,
    #[serde(rename = "failed", serialize_with = "tenths")]
    pub records_failed: Vec<f64>,
}

fn tenths<S: serde::Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(values.len()))?;
    for v in values {
        let tenths = (v * 10.0).round();
        if tenths % 10.0 == 0.0 {
            seq.serialize_element(&((tenths / 10.0) as u64))?;
        } else {
            seq.serialize_element(&(tenths / 10.0))?;
        }
    }
    seq.end()
}

impl History {
    pub fn sample(&mut self, p: &PipelineMetrics, at_ms: i64) {
        if self.0.len() == KEPT {
            self.0.pop_front();
        }
        self.0.push_back(Sample::of(p, at_ms));
    }

    pub fn recent(&self) -> Recent {
        let mut rates = Rates {
            last_ms: self.0.back().map_or(0, |s| s.at_ms),
            step_ms: SAMPLE_EVERY_MS,
            ..Rates::default()
        };
        for (a, b) in self.0.iter().zip(self.0.iter().skip(1)) {
            let secs = (b.at_ms - a.at_ms).max(1) as f64 / 1000.0;
            let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
            rates.records_in.push(per_s(a.records_in, b.records_in));
            rates.records_out.push(per_s(a.records_out, b.records_out));
            rates
                .records_failed
                .push(per_s(a.records_failed, b.records_failed));
        }
        let (Some(newest), Some(oldest)) = (
            self.0.back(),
            self.0.iter().rev().nth(LATENCY_WINDOW).or(self.0.front()),
        ) else {
            return Recent::default();
        };
        let mut window = [0; LATENCY_BUCKETS.len() + 1];
        for (w, (n, o)) in window
            .iter_mut()
            .zip(newest.batches.iter().zip(&oldest.batches))
        {
            *w = n.saturating_sub(*o);
        }
        Recent {
            rates,
            batches: window[LATENCY_BUCKETS.len()],
            batch_p50_ms: quantile(&window, 0.5),
            batch_p99_ms: quantile(&window, 0.99),
        }
    }
}

/// The `q` quantile of a cumulative histogram over LATENCY_BUCKETS (the last entry counts all),
/// in milliseconds, interpolated within its bucket as Prometheus' `histogram_quantile` does.
fn quantile(cumulative: &[u64; LATENCY_BUCKETS.len() + 1], q: f64) -> Option<f64> {
    let total = cumulative[LATENCY_BUCKETS.len()];
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut below, mut lower) = (0u64, 0.0);
    for (bound, &count) in LATENCY_BUCKETS.iter().zip(cumulative) {
        if count as f64 >= rank {
            let within = (count - below).max(1) as f64;
            let seconds = lower + (bound - lower) * (rank - below as f64) / within;
            return Some(seconds * 1000.0);
        }
        (below, lower) = (count, *bound);
    }
    Some(lower * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_and_quantiles_come_from_the_samples_not_from_the_whole_run() {
        let p = PipelineMetrics::default();
        let mut h = History::default();
        // Before the window: slow batches that must not count.
        for _ in 0..100 {
            p.observe_batch(Duration::from_millis(800));
        }
        h.sample(&p, 0);
        for i in 1..=3u64 {
            p.records_in.fetch_add(1000, Relaxed);
            p.records_out.fetch_add(900, Relaxed);
            for _ in 0..98 {
                p.observe_batch(Duration::from_micros(300));
            }
            for _ in 0..2 {
                p.observe_batch(Duration::from_millis(40));
            }
            h.sample(&p, i as i64 * 2000);
        }
        let r = h.recent();
        assert_eq!(r.rates.last_ms, 6000);
        assert_eq!(r.rates.records_in, [500.0; 3]);
        assert_eq!(r.rates.records_out, [450.0; 3]);
        assert_eq!(r.rates.records_failed, [0.0; 3]);
        assert_eq!(r.batches, 300);
        let p50 = r.batch_p50_ms.unwrap();
        assert!((0.1..=0.5).contains(&p50), "{p50}");
        let p99 = r.batch_p99_ms.unwrap();
        assert!((25.0..=50.0).contains(&p99), "{p99}");
        // A quiet minute later, no batches are recent.
        for i in 4..(4 + LATENCY_WINDOW as i64) {
            h.sample(&p, i * 2000);
        }
        let r = h.recent();
        assert_eq!((r.batches, r.batch_p50_ms), (0, None));
        assert_eq!(History::default().recent(), Recent::default());
    }

    #[test]
    fn rates_are_sent_to_a_tenth_and_integers_without_a_fraction() {
        let r = Rates {
            last_ms: 5,
            step_ms: 1000,
            records_in: vec![100.0, 99.900_099_9, 0.04],
            records_out: vec![0.25],
            records_failed: vec![],
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"last_ms":5,"step_ms":1000,"in":[100,99.9,0],"out":[0.3],"failed":[]}"#
        );
    }

    #[test]
    fn quantiles_beyond_the_last_bucket_show_its_bound() {
        let mut c = [0; LATENCY_BUCKETS.len() + 1];
        c[LATENCY_BUCKETS.len()] = 10;
        assert_eq!(quantile(&c, 0.5), Some(1000.0));
        c = [10; LATENCY_BUCKETS.len() + 1];
        let p99 = quantile(&c, 0.99).unwrap();
        assert!((p99 - 0.099).abs() < 1e-9, "{p99}");
    }
}
