//! {{name}}: a Sluice stateful plugin. It counts the records of each `name` and adds the count
//! so far as `visits`; the counts are state the runtime keeps (checkpointed with the source's
//! positions, restored after a restart, moved with a partition). Each name also gets an
//! event-time timer an hour after its first visit (stream time: the records' timestamps), which
//! says how many visits it had and forgets it.

use serde_json::{Map, Value};
use sluice_sdk::{Config, Context, Error, Fired, IntoOutputs, Message, Stateful};

pub struct Visits;

const HOUR_MS: i64 = 3_600_000;

fn count(ctx: &mut Context<'_>, name: &str) -> u64 {
    ctx.get(name.as_bytes())
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

impl Stateful for Visits {
    fn init(_settings: &Config) -> Result<Self, Error> {
        Ok(Visits)
    }

    /// One record in, one out. State written here is kept only if the record succeeds.
    fn process<'a>(
        &mut self,
        msg: Message<'a>,
        ctx: &mut Context<'_>,
    ) -> Result<impl IntoOutputs<'a>, Error> {
        let mut record: Map<String, Value> = serde_json::from_slice(&msg.value)
            .map_err(|e| Error::new(format!("not a JSON object ({e})")))?;
        let name = match record.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => return Err(Error::new("no `name` to count by")),
        };
        let visits = count(ctx, &name) + 1;
        ctx.put(name.as_bytes(), &visits.to_le_bytes());
        if visits == 1 {
            if let Some(ts) = msg.timestamp_ms {
                ctx.register_event_timer(name.as_bytes(), ts + HOUR_MS);
            }
        }
        record.insert("visits".to_owned(), visits.into());
        let value = serde_json::to_vec(&record).map_err(|e| Error::new(e.to_string()))?;
        Ok(Some(msg.with_value(value)))
    }

    /// A name's hour is over: its total, and it is forgotten.
    fn on_timer(&mut self, timer: &Fired, ctx: &mut Context<'_>) -> Result<Vec<Message<'static>>, Error> {
        let name = String::from_utf8_lossy(&timer.key).into_owned();
        let total = count(ctx, &name);
        ctx.delete(&timer.key);
        let out = serde_json::json!({"name": name, "visits_in_hour": total}).to_string();
        Ok(vec![Message::new(out.into_bytes())])
    }
}

sluice_sdk::stateful!(Visits);

// The logic is plain Rust: `cargo test` runs it natively, with MemoryState as the host.
#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::MemoryState;

    #[test]
    fn counts_per_name_and_sums_up_after_an_hour() {
        let mut state = MemoryState::default();
        let mut v = Visits;
        for name in ["ada", "bob", "ada"] {
            let msg = Message::new(format!(r#"{{"name":"{name}"}}"#).into_bytes()).with_timestamp_ms(0);
            state.process(&mut v, msg).unwrap();
        }
        state.observe(HOUR_MS);
        let summary = state.fire_due(&mut v, 0).unwrap();
        assert_eq!(&*summary[0].value, br#"{"name":"ada","visits_in_hour":2}"#);
    }
}
