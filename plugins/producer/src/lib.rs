//! The stack's producer rule: a row read from a bucket object becomes a Kafka record keyed by
//! its `user_id` (so one user's sessions stay in one partition, in order), with the object it
//! came from in the `source-object` header and the session's own time as the record timestamp.
//! The host does the listing, reading and Parquet/JSON decoding; this is only the rule.
//!
//! Config: `key_field` (default `user_id`): the field to key by.

use std::cell::RefCell;

use serde_json::Value;
use sluice_sdk::{Config, Error, Message};

/// The header naming the object a record was read from.
pub const SOURCE_HEADER: &str = "source-object";

thread_local! {
    static KEY_FIELD: RefCell<String> = RefCell::new("user_id".to_owned());
}

pub fn init(config: &Config) -> Result<(), String> {
    if let Some(field) = config.get("key_field") {
        if field.is_empty() {
            return Err("key_field is empty: name the field to key records by".to_owned());
        }
        KEY_FIELD.with(|k| *k.borrow_mut() = field.to_owned());
    }
    Ok(())
}

pub fn process(msg: Message<'_>) -> Result<Message<'_>, Error> {
    let row: serde_json::Map<String, Value> = serde_json::from_slice(&msg.value).map_err(|e| {
        Error::new(format!(
            "not a JSON object ({e}): the producer expects one row per record"
        ))
    })?;
    let key = KEY_FIELD.with(|field| {
        let field = field.borrow();
        match row.get(field.as_str()) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(Error::new(format!(
                "no `{field}`: records are keyed by it (set key_field to key by another field)"
            ))),
        }
    })?;
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

sluice_sdk::transform!(wit: "../../wit", process: process, init: init);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_user_and_names_the_object() {
        let row = br#"{"user_id":"u-1","timestamp":1700000000,"clicks":3}"#;
        let msg = Message::new(&row[..]).with_key(&b"raw/part-1.parquet"[..]);
        let out = process(msg).unwrap();
        assert_eq!(out.key.as_deref(), Some(&b"u-1"[..]));
        assert_eq!(out.header(SOURCE_HEADER), Some(&b"raw/part-1.parquet"[..]));
        assert_eq!(out.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(&out.value[..], &row[..]);
    }

    #[test]
    fn rows_without_a_key_are_errors() {
        let e = process(Message::new(&br#"{"clicks":3}"#[..])).unwrap_err();
        assert!(e.message().contains("no `user_id`"), "{}", e.message());
        let e = process(Message::new(&b"17"[..])).unwrap_err();
        assert!(e.message().contains("not a JSON object"), "{}", e.message());
    }
}
