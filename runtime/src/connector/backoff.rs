//! The one backoff of every retry loop of the endpoints: exponential from a first delay,
//! capped, with jitter so that processes retrying the same server do not do so in step.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays from about `first`, doubling up to `max`, for ever: the caller decides when to stop.
pub fn delays(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_never_end() {
        let d: Vec<Duration> = delays(Duration::from_millis(100), Duration::from_secs(1))
            .take(20)
            .collect();
        assert_eq!(d.len(), 20);
        assert!(d[0] >= Duration::from_millis(100) && d[0] < Duration::from_millis(200));
        // Jitter adds up to one more first delay on top of the cap.
        assert!(d.iter().all(|d| *d <= Duration::from_millis(2000)), "{d:?}");
        assert!(d[19] >= Duration::from_secs(1), "{d:?}");
    }
}
