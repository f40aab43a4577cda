//! {{name}}: a Sluice transform plugin. It adds a `greeting` to every JSON record, from the
//! record's `name` and the `greeting` setting (default "hello"); a record that is not a JSON
//! object fails alone and goes where the pipeline's error policy says (fail, skip or dlq).

use serde_json::{Map, Value};
use sluice_sdk::{Config, Error, IntoOutputs, Message, Transform};

/// The plugin's state: built once per instance from the pipeline's settings.
pub struct Greeter {
    greeting: String,
}

impl Transform for Greeter {
    /// Called once per instance with the settings (`--set greeting=hi`); an error stops the
    /// plugin from loading and is shown to the user as is.
    fn init(settings: &Config) -> Result<Self, Error> {
        let greeting = settings.get("greeting").unwrap_or("hello");
        if greeting.is_empty() {
            return Err(Error::new(
                "greeting is empty: set it to a word, e.g. greeting=hi",
            ));
        }
        Ok(Greeter {
            greeting: greeting.to_owned(),
        })
    }

    /// One record in, one out. Return an `Option<Message>` to filter, a `Vec<Message>` to fan
    /// out, `msg.to_output("name")` to route to a named output of the pipeline.
    fn process<'a>(&mut self, msg: Message<'a>) -> Result<impl IntoOutputs<'a>, Error> {
        let mut record: Map<String, Value> = serde_json::from_slice(&msg.value)
            .map_err(|e| Error::new(format!("not a JSON object ({e})")))?;
        let name = match record.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => "stranger".to_owned(),
        };
        let greeting = format!("{}, {name}", self.greeting);
        record.insert("greeting".to_owned(), Value::String(greeting));
        let value = serde_json::to_vec(&record).map_err(|e| Error::new(e.to_string()))?;
        // with_value keeps the key, headers and timestamp.
        Ok(msg.with_value(value))
    }
}

sluice_sdk::transform!(Greeter);

// The logic is plain Rust: `cargo test` runs these natively, without wasm.
#[cfg(test)]
mod tests {
    use super::*;

    fn greeter(settings: &[(&str, &str)]) -> Greeter {
        let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Greeter::init(&Config::new(settings.collect())).unwrap()
    }

    #[test]
    fn greets_by_name_and_keeps_the_key() {
        let msg = Message::new(&br#"{"name":"ada"}"#[..]).with_key(&b"k"[..]);
        let out = greeter(&[("greeting", "hi")]).process(msg).unwrap().into_messages();
        assert_eq!(&*out[0].value, br#"{"greeting":"hi, ada","name":"ada"}"#);
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn a_record_that_is_not_an_object_fails_alone() {
        let err = greeter(&[]).process(Message::new(&b"[1]"[..])).err().unwrap();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }
}
