//! {{name}}: a Sluice transform plugin. It adds a `greeting` to every JSON record, from the
//! record's `name` and the `greeting` setting (default "hello"); a record that is not a JSON
//! object fails alone and goes where the pipeline's error policy says (fail, skip or dlq).

use std::cell::RefCell;

use serde_json::{Map, Value};
use sluice_sdk::{Config, Error, Message};

thread_local! {
    static GREETING: RefCell<String> = RefCell::new("hello".to_owned());
}

/// Called once per instance with the pipeline's settings (`--set greeting=hi`); an error stops
/// the plugin from loading and is shown to the user as is.
pub fn init(config: &Config) -> Result<(), String> {
    if let Some(greeting) = config.get("greeting") {
        if greeting.is_empty() {
            return Err("greeting is empty: set it to a word, e.g. greeting=hi".to_owned());
        }
        GREETING.with(|g| *g.borrow_mut() = greeting.to_owned());
    }
    Ok(())
}

/// One record in, one out. Return an `Option<Message>` to filter, a `Vec<Message>` to fan out.
pub fn process(msg: Message<'_>) -> Result<Message<'_>, Error> {
    let mut record: Map<String, Value> = serde_json::from_slice(&msg.value)
        .map_err(|e| Error::new(format!("not a JSON object ({e})")))?;
    let name = match record.get("name") {
        Some(Value::String(name)) => name.clone(),
        _ => "stranger".to_owned(),
    };
    let greeting = GREETING.with(|g| format!("{}, {name}", g.borrow()));
    record.insert("greeting".to_owned(), Value::String(greeting));
    let value = serde_json::to_vec(&record).map_err(|e| Error::new(e.to_string()))?;
    // with_value keeps the key, headers and timestamp.
    Ok(msg.with_value(value))
}

sluice_sdk::transform!(wit: "wit", process: process, init: init);

// The logic is plain Rust: `cargo test` runs these natively, without wasm.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name_and_keeps_the_key() {
        let msg = Message::new(&br#"{"name":"ada"}"#[..]).with_key(&b"k"[..]);
        let out = process(msg).unwrap();
        assert_eq!(&*out.value, br#"{"greeting":"hello, ada","name":"ada"}"#);
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn a_record_that_is_not_an_object_fails_alone() {
        let err = process(Message::new(&b"[1]"[..])).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }
}
