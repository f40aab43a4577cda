//! JSON-aware comparison, readable differences, and the lines `--bless` writes.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

pub(super) use crate::format::json_diff::json_diff;

use crate::record::Record;

use super::cases::*;

pub(super) fn render_failure(input: &str, expected: &str, diff: &[String]) -> String {
    let mut s = format!("    {input} (expected at {expected}):\n");
    for d in diff {
        let _ = writeln!(s, "      {d}");
    }
    s
}

/// Compares one output with what was expected, adding a line per difference.
pub(super) fn compare(want: &Envelope, got: &Record, prefix: &str, diff: &mut Vec<String>) {
    match &want.value {
        Expected::Json(w) => match serde_json::from_slice::<Value>(&got.value) {
            Ok(g) => json_diff(&format!("{prefix}$"), w, &g, diff),
            Err(_) => diff.push(format!(
                "{prefix}value: expected JSON {w}, got non-JSON {}",
                shown(&got.value)
            )),
        },
        Expected::Text(w) => {
            if w.as_bytes() != &got.value[..] {
                diff.push(format!(
                    "{prefix}value: expected {w:?}, got {}",
                    shown(&got.value)
                ));
            }
        }
    }
    if let Some(key) = &want.key {
        let got_key = got
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        if *key != got_key {
            diff.push(format!("{prefix}key: expected {key:?}, got {got_key:?}"));
        }
    }
    if let Some(headers) = &want.headers {
        let mut w: Vec<(String, String)> = headers.clone();
        let mut g: Vec<(String, String)> = got
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        w.sort();
        g.sort();
        if w != g {
            diff.push(format!("{prefix}headers: expected {w:?}, got {g:?}"));
        }
    }
    if let Some(ts) = &want.timestamp_ms {
        if *ts != got.timestamp_ms {
            diff.push(format!(
                "{prefix}timestamp_ms: expected {ts:?}, got {:?}",
                got.timestamp_ms
            ));
        }
    }
}

/// A value for a message: JSON as it is, anything else quoted, long ones cut.
pub(super) fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let cut: String = text.chars().take(200).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(_) => format!("{cut}{more}"),
        Err(_) => format!("{cut:?}{more}"),
    }
}

pub(super) fn bless_value(bytes: &[u8]) -> (&'static str, Value) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => ("$value", v),
        Err(_) => (
            "$text",
            Value::String(String::from_utf8_lossy(bytes).into_owned()),
        ),
    }
}

pub(super) fn bless_envelope(r: &Record, full: bool) -> Value {
    let (field, value) = bless_value(&r.value);
    if !full && field == "$value" && !is_envelope_like(&value) {
        return value;
    }
    let mut m = Map::new();
    m.insert(field.to_owned(), value);
    if full {
        m.insert(
            "$key".to_owned(),
            r.key
                .as_ref()
                .map_or(Value::Null, |k| String::from_utf8_lossy(k).into()),
        );
        m.insert(
            "$headers".to_owned(),
            r.headers
                .iter()
                .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into()))
                .collect::<Map<_, _>>()
                .into(),
        );
        m.insert(
            "$timestamp_ms".to_owned(),
            r.timestamp_ms.map_or(Value::Null, Value::from),
        );
    }
    Value::Object(m)
}

/// A plain value that would read as an envelope or outcome must itself be wrapped.
pub(super) fn is_envelope_like(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.keys().any(|k| k.starts_with('$')))
}

pub(super) fn bless_outcome(input: &Record, result: &Result<Vec<Record>, String>) -> Value {
    match result {
        Err(e) => serde_json::json!({ "$error": e }),
        Ok(outputs) => {
            let same_meta = |o: &Record| {
                o.key == input.key
                    && o.headers == input.headers
                    && o.timestamp_ms == input.timestamp_ms
            };
            match outputs.as_slice() {
                [one] => bless_envelope(one, !same_meta(one)),
                many => serde_json::json!({
                    "$outputs": many.iter().map(|o| bless_envelope(o, !same_meta(o))).collect::<Vec<_>>()
                }),
            }
        }
    }
}

pub(super) fn write_lines(path: &Path, lines: &[Value]) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(w: Value, g: Value) -> Vec<String> {
        let mut d = Vec::new();
        json_diff("$", &w, &g, &mut d);
        d
    }

    #[test]
    fn numbers_compare_by_value_and_key_order_is_free() {
        assert!(diff(
            json!({"a": 39.0, "b": [1, 2]}),
            json!({"b": [1.0, 2], "a": 39})
        )
        .is_empty());
        assert_eq!(
            diff(json!({"a": 1}), json!({"a": 2})),
            ["$.a: expected 1, got 2"]
        );
    }

    #[test]
    fn differences_name_their_path() {
        let d = diff(
            json!({"x": {"y": "accepted", "gone": 1}, "l": [1]}),
            json!({"x": {"y": "rejected", "new": true}, "l": [1, 2]}),
        );
        assert_eq!(
            d,
            [
                "$.l: expected 1 element(s), got 2",
                "$.x.gone: expected 1, missing",
                "$.x.y: expected \"accepted\", got \"rejected\"",
                "$.x.new: not expected, got true",
            ]
        );
    }

    #[test]
    fn envelopes_and_plain_values() {
        let env = envelope(&json!({"$value": {"a": 1}, "$key": null}), "f:1").unwrap();
        assert_eq!(env.key, Some(None));
        assert_eq!(env.value, Expected::Json(json!({"a": 1})));
        // An object with other fields too is a plain value.
        let plain = envelope(&json!({"$value": 1, "other": 2}), "f:1").unwrap();
        assert_eq!(
            plain.value,
            Expected::Json(json!({"$value": 1, "other": 2}))
        );
        let err = envelope(&json!({"$value": 1, "$key": 5}), "f:3").unwrap_err();
        assert!(
            err.to_string().contains("f:3: `$key` must be a string"),
            "{err}"
        );
    }
}
