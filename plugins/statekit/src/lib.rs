//! A stateful plugin for testing the host. Each record is a JSON request:
//!
//! - `{"timer":"processing","id":"x","in_ms":2000}`: a processing-time timer `in_ms` from now
//!   (the plugin needs `--allow clock` to know now);
//! - `{"timer":"event","id":"x","at":T}`: an event-time timer at T (ms);
//! - `{"event_time":T}`: the record's event time is T;
//! - `{"put":"k","bytes":N}`: puts N bytes under key k (past the lane's state limit: this
//!   record's failure);
//! - `{"count":"k"}`: adds one to the count under k and outputs `{"count":"k","n":N}`.
//!
//! A fired timer outputs `{"fired":"x","domain":"event"|"processing","at":T}`.

use sluice_sdk::{Config, Context, Domain, Error, Fired, IntoOutputs, Message, Stateful};

pub struct StateKit;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Stateful for StateKit {
    fn init(_: &Config) -> Result<Self, Error> {
        Ok(StateKit)
    }

    fn process<'a>(
        &mut self,
        msg: Message<'a>,
        ctx: &mut Context<'_>,
    ) -> Result<impl IntoOutputs<'a>, Error> {
        let v: serde_json::Value =
            serde_json::from_slice(&msg.value).map_err(|e| Error::new(e.to_string()))?;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let int = |k: &str| v.get(k).and_then(serde_json::Value::as_i64);
        if let Some(t) = int("event_time") {
            ctx.observe_event_time(t);
        }
        match text("timer").as_deref() {
            Some("processing") => {
                let id = text("id").unwrap_or_default();
                ctx.register_processing_timer(id.as_bytes(), now_ms() + int("in_ms").unwrap_or(0));
            }
            Some("event") => {
                let id = text("id").unwrap_or_default();
                ctx.register_event_timer(id.as_bytes(), int("at").unwrap_or(0));
            }
            _ => {}
        }
        if let Some(key) = text("put") {
            let n = int("bytes").unwrap_or(0).max(0) as usize;
            ctx.put(key.as_bytes(), &vec![7; n]);
        }
        if let Some(key) = text("count") {
            let n = ctx
                .get(key.as_bytes())
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
                + 1;
            ctx.put(key.as_bytes(), &n.to_le_bytes());
            let out = serde_json::json!({"count": key, "n": n}).to_string();
            return Ok(Some(msg.with_value(out.into_bytes())));
        }
        Ok(None)
    }

    fn on_timer(
        &mut self,
        timer: &Fired,
        _: &mut Context<'_>,
    ) -> Result<Vec<Message<'static>>, Error> {
        let domain = match timer.domain {
            Domain::EventTime => "event",
            Domain::ProcessingTime => "processing",
        };
        let out = serde_json::json!({
            "fired": String::from_utf8_lossy(&timer.key),
            "domain": domain,
            "at": timer.at_ms,
        });
        Ok(vec![Message::new(out.to_string().into_bytes())])
    }

    /// Its keys are the ids of its requests, text: binary keys are another plugin's state.
    fn check_state(&self, sample: &[(Vec<u8>, Vec<u8>)]) -> Result<(), Error> {
        match sample.iter().find(|(k, _)| std::str::from_utf8(k).is_err()) {
            Some((key, _)) => Err(Error::new(format!(
                "key {key:?} is not text: the state is another plugin's"
            ))),
            None => Ok(()),
        }
    }
}

sluice_sdk::stateful!(StateKit);
