//! The stack's producer rule: a row read from a bucket object becomes a Kafka record keyed by
//! its `user_id` (so one user's sessions stay in one partition, in order), with the object it
//! came from in the `source-object` header and the session's own time as the record timestamp.
//! The host does the listing, reading and Parquet/JSON decoding; this is only the rule.
//!
//! Config: `key_field` (default `user_id`): the field to key by.

use serde_json::Value;
use sluice_sdk::{Config, Error, IntoOutputs, Message, Transform};

/// The header naming the object a record was read from.
pub const SOURCE_HEADER: &str = "source-object";

/// The producer, with the field it keys records by.
pub struct Producer {
    key_field: String,
}

impl Transform for Producer {
    fn init(settings: &Config) -> Result<Self, Error> {
        let key_field = settings.get("key_field").unwrap_or("user_id");
        if key_field.is_empty() {
            return Err(Error::new(
                "key_field is empty: name the field to key records by",
            ));
        }
        Ok(Producer {
            key_field: key_field.to_owned(),
        })
    }

    fn process<'a>(&mut self, msg: Message<'a>) -> Result<impl IntoOutputs<'a>, Error> {
        produce(msg, &self.key_field)
    }
}

/// Keys a row by `key_field`, names its object in a header and stamps it with its time.
pub fn produce<'a>(msg: Message<'a>, key_field: &str) -> Result<Message<'a>, Error> {
    let row: serde_json::Map<String, Value> = serde_json::from_slice(&msg.value).map_err(|e| {
        Error::new(format!(
            "not a JSON object ({e}): the producer expects one row per record"
        ))
    })?;
    let key = match row.get(key_field) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(Error::new(format!(
                "no `{key_field}`: records are keyed by it (set key_field to key by another field)"
            )))
        }
    };
    let object = msg.key.as_deref().map(<[u8]>::to_vec);
    let mut out = msg.with_key(key.into_bytes());
    if let Some(object) = object {
        out = out.with_header(SOURCE_HEADER, object);
    }
    // Session time (epoch seconds) as the record's event time, when the row has it.
    if let Some(ts) = row.get("timestamp").and_then(Value::as_i64) {
        if let Some(ms) = ts.checked_mul(1000) {
            out = out.with_timestamp_ms(ms);
        }
    }
    Ok(out)
}

sluice_sdk::transform!(Producer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_user_and_names_the_object() {
        let row = br#"{"user_id":"u-1","timestamp":1700000000,"clicks":3}"#;
        let msg = Message::new(&row[..]).with_key(&b"raw/part-1.parquet"[..]);
        let out = produce(msg, "user_id").unwrap();
        assert_eq!(out.key.as_deref(), Some(&b"u-1"[..]));
        assert_eq!(out.header(SOURCE_HEADER), Some(&b"raw/part-1.parquet"[..]));
        assert_eq!(out.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(&out.value[..], &row[..]);
    }

    #[test]
    fn the_key_field_is_a_setting() {
        let settings = Config::new(vec![("key_field".into(), "clicks".into())]);
        let mut p = Producer::init(&settings).unwrap();
        let out = p.process(Message::new(&br#"{"clicks":3}"#[..])).unwrap();
        assert_eq!(out.into_messages()[0].key.as_deref(), Some(&b"3"[..]));
        let empty = Config::new(vec![("key_field".into(), String::new())]);
        assert!(Producer::init(&empty).is_err());
    }

    #[test]
    fn rows_without_a_key_are_errors() {
        let e = produce(Message::new(&br#"{"clicks":3}"#[..]), "user_id").unwrap_err();
        assert!(e.message().contains("no `user_id`"), "{}", e.message());
        let e = produce(Message::new(&b"17"[..]), "user_id").unwrap_err();
        assert!(e.message().contains("not a JSON object"), "{}", e.message());
    }
}
