//! {{name}}: a Sluice source plugin. It emits `{"n": N, "at_ms": T}`, one record per
//! `interval_ms` of host time (setting, default 1000), each stamped with the time it was due.

use sluice_sdk::{Config, Error, Message, Source};

pub struct Counter {
    interval_ms: i64,
    started_ms: Option<i64>,
    n: i64,
}

impl Source for Counter {
    /// Called once per instance with the pipeline's settings (`--set interval_ms=500`).
    fn init(config: &Config) -> Result<Self, Error> {
        let interval_ms = config.parse::<i64>("interval_ms")?.unwrap_or(1000);
        if interval_ms <= 0 {
            return Err(Error::new(format!(
                "interval_ms={interval_ms} must be > 0 (milliseconds)"
            )));
        }
        Ok(Counter {
            interval_ms,
            started_ms: None,
            n: 0,
        })
    }

    /// Up to `max` records due by `now_ms` (the host's clock); none when nothing is due yet.
    fn next(&mut self, max: u32, now_ms: i64) -> Result<Vec<Message<'static>>, Error> {
        let start = *self.started_ms.get_or_insert(now_ms);
        let due = (now_ms - start).max(0) / self.interval_ms + 1;
        let mut out = Vec::new();
        while self.n < due && out.len() < max as usize {
            let at = start + self.n * self.interval_ms;
            let value = format!(r#"{{"n":{},"at_ms":{at}}}"#, self.n);
            out.push(Message::new(value.into_bytes()).with_timestamp_ms(at));
            self.n += 1;
        }
        Ok(out)
    }
}

sluice_sdk::source!(Counter);

// The logic is plain Rust: `cargo test` runs these natively, without wasm.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_per_interval_of_host_time() {
        let config = Config::new(vec![("interval_ms".into(), "500".into())]);
        let mut counter = Counter::init(&config).unwrap();
        assert_eq!(counter.next(10, 1_000).unwrap().len(), 1);
        assert_eq!(counter.next(10, 1_400).unwrap().len(), 0);
        let out = counter.next(10, 2_000).unwrap();
        assert_eq!(&*out[1].value, br#"{"n":2,"at_ms":2000}"#);
    }
}
