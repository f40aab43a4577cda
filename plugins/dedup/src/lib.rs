//! Sluice plugin (stateful): passes the first record per id and drops repeats within a time to
//! live. Settings: `field=session_id` (the id: a top-level field of the JSON record) and
//! `ttl=1h` (how long an id is remembered; processing time). A record without the field fails
//! alone. Ids are remembered per source lane: produce to a topic keyed by the id (the Kafka
//! way) so that repeats meet in one partition.

use std::time::Duration;

use sluice_sdk::{Config, Context, Error, Fired, IntoOutputs, Message, Stateful};

pub struct Dedup {
    field: String,
    ttl: Duration,
}

/// `1h`, `30m`, `90s`, `500ms`; a bare number is seconds.
fn duration(settings: &Config, key: &str, default: Duration) -> Result<Duration, Error> {
    let Some(text) = settings.get(key) else {
        return Ok(default);
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        Error::new(format!(
            "setting `{key}={text}` is not a duration (e.g. 1h, 30m)"
        ))
    })?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => {
            return Err(Error::new(format!(
                "setting `{key}={text}`: use ms, s, m, h or d"
            )))
        }
    })
}

impl Stateful for Dedup {
    fn init(settings: &Config) -> Result<Self, Error> {
        Ok(Dedup {
            field: settings.get("field").unwrap_or("session_id").to_owned(),
            ttl: duration(settings, "ttl", Duration::from_secs(3600))?,
        })
    }

    fn process<'a>(
        &mut self,
        msg: Message<'a>,
        ctx: &mut Context<'_>,
    ) -> Result<impl IntoOutputs<'a>, Error> {
        let v: serde_json::Value = serde_json::from_slice(&msg.value)
            .map_err(|e| Error::new(format!("not a JSON record: {e}")))?;
        let id = match v.get(&self.field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => {
                return Err(Error::new(format!(
                    "no `{}` field to deduplicate by",
                    self.field
                )))
            }
            Some(other) => other.to_string(),
        };
        if ctx.get(id.as_bytes()).is_some() {
            return Ok(None);
        }
        ctx.put_with_ttl(id.as_bytes(), b"", self.ttl);
        Ok(Some(msg))
    }

    fn on_timer(&mut self, _: &Fired, _: &mut Context<'_>) -> Result<Vec<Message<'static>>, Error> {
        Ok(Vec::new())
    }

    /// An id is kept with an empty value: other values are another plugin's state.
    fn check_state(&self, sample: &[(Vec<u8>, Vec<u8>)]) -> Result<(), Error> {
        match sample.iter().find(|(_, v)| !v.is_empty()) {
            Some((key, value)) => Err(Error::new(format!(
                "key {:?} holds {} bytes where dedup keeps none: the state is another plugin's",
                String::from_utf8_lossy(key),
                value.len()
            ))),
            None => Ok(()),
        }
    }
}

sluice_sdk::stateful!(Dedup);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::MemoryState;

    #[test]
    fn the_first_of_each_id_passes_within_the_ttl() {
        let settings = Config::new(vec![("ttl".into(), "10s".into())]);
        let mut d = Dedup::init(&settings).unwrap();
        let mut state = MemoryState::default();
        let mut pass = |state: &mut MemoryState, id: &str| {
            let v = format!(r#"{{"session_id":"{id}"}}"#).into_bytes();
            state.process(&mut d, Message::new(v)).unwrap().len()
        };
        assert_eq!(pass(&mut state, "a"), 1);
        assert_eq!(pass(&mut state, "b"), 1);
        assert_eq!(pass(&mut state, "a"), 0);
        state.now_ms = 10_001;
        assert_eq!(pass(&mut state, "a"), 1, "remembered for the ttl only");
    }

    #[test]
    fn a_record_without_the_id_fails_alone() {
        let mut d = Dedup::init(&Config::default()).unwrap();
        let mut state = MemoryState::default();
        let err = state.process(&mut d, Message::new(&b"{}"[..])).unwrap_err();
        assert!(err.message().contains("session_id"), "{err}");
    }
}
