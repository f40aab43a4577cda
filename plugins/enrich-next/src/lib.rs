//! The next version of `enrich`: the same rule (enrich as a library), plus a field
//! `"enrich_version":2` so that every output shows which version made it. Hot-swap tests and
//! demos switch between the two while a stream runs.

use sluice_sdk::{Error, Message};

pub fn process(msg: Message<'_>) -> Result<Message<'_>, Error> {
    let mut out = Vec::with_capacity(msg.value.len() + 112);
    enrich::enrich_json(&msg.value, &mut out).map_err(Error::from)?;
    // enrich_json writes one object: add the field before its closing brace.
    match out.iter().rposition(|&b| b == b'}') {
        Some(end) => {
            out.truncate(end);
            out.extend_from_slice(br#","enrich_version":2}"#);
        }
        None => return Err(Error::new("enrich produced no JSON object")),
    }
    Ok(msg.with_value(out))
}

sluice_sdk::transform!(process: process);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_version_to_enrich_output() {
        let input = br#"{"latitude":39.0,"longitude":22.0,"timestamp":0,"user_id":"u"}"#;
        let out = process(Message::new(&input[..])).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.value).unwrap();
        assert_eq!(v["enrich_version"], 2);
        assert_eq!(v["country"], "Greece");
        assert_eq!(v["status"], "accepted");
    }
}
