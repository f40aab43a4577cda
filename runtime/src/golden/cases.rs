//! Case files: lines, envelopes, and what each input is expected to become.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::record::Record;

/// One line of a case file, with where it is.
pub(super) struct Line {
    pub(super) at: String,
    pub(super) json: Option<Value>,
    pub(super) text: String,
}

pub(super) fn read_lines(path: &Path) -> Result<Vec<Line>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the case file {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Line {
            at: format!("{name}:{}", i + 1),
            json: serde_json::from_str(l).ok(),
            text: l.to_owned(),
        })
        .collect())
}

/// An expected (or given) message: the value and, when given, key, headers and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Envelope {
    pub(super) value: Expected,
    pub(super) key: Option<Option<String>>,
    pub(super) headers: Option<Vec<(String, String)>>,
    pub(super) timestamp_ms: Option<Option<i64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expected {
    Json(Value),
    Text(String),
}

pub(super) const ENVELOPE_FIELDS: [&str; 5] =
    ["$value", "$text", "$key", "$headers", "$timestamp_ms"];

pub(super) fn is_envelope(map: &Map<String, Value>) -> bool {
    (map.contains_key("$value") || map.contains_key("$text"))
        && map.keys().all(|k| ENVELOPE_FIELDS.contains(&k.as_str()))
}

pub(super) fn envelope(v: &Value, at: &str) -> Result<Envelope> {
    let Some(map) = v.as_object().filter(|m| is_envelope(m)) else {
        return Ok(Envelope {
            value: Expected::Json(v.clone()),
            key: None,
            headers: None,
            timestamp_ms: None,
        });
    };
    let value = match (map.get("$value"), map.get("$text")) {
        (Some(v), None) => Expected::Json(v.clone()),
        (None, Some(Value::String(t))) => Expected::Text(t.clone()),
        _ => bail!("{at}: give either `$value` (JSON) or `$text` (a string), not both"),
    };
    let key = match map.get("$key") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(k)) => Some(Some(k.clone())),
        Some(other) => bail!("{at}: `$key` must be a string or null, not {other}"),
    };
    let headers = match map.get("$headers") {
        None => None,
        Some(Value::Object(h)) => Some(
            h.iter()
                .map(|(n, v)| match v {
                    Value::String(s) => Ok((n.clone(), s.clone())),
                    other => Err(anyhow!("{at}: header `{n}` must be a string, not {other}")),
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(other) => bail!("{at}: `$headers` must be an object of strings, not {other}"),
    };
    let timestamp_ms = match map.get("$timestamp_ms") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(v.as_i64().ok_or_else(|| {
            anyhow!("{at}: `$timestamp_ms` must be an integer or null, not {v}")
        })?)),
    };
    Ok(Envelope {
        value,
        key,
        headers,
        timestamp_ms,
    })
}

pub(super) fn input_record(line: &Line) -> Result<Record> {
    let env = match &line.json {
        Some(v @ Value::Object(m)) if is_envelope(m) => envelope(v, &line.at)?,
        _ => {
            // Not an envelope: the line is the value, byte for byte.
            let mut r = Record::new(Bytes::from(line.text.clone()));
            r.origin = Some(line.at.as_str().into());
            return Ok(r);
        }
    };
    let value = match env.value {
        Expected::Json(v) => serde_json::to_vec(&v)?,
        Expected::Text(t) => t.into_bytes(),
    };
    let mut r = Record::new(Bytes::from(value));
    r.key = env.key.flatten().map(Bytes::from);
    r.headers = env
        .headers
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (n, Bytes::from(v)))
        .collect();
    r.timestamp_ms = env.timestamp_ms.flatten();
    r.origin = Some(line.at.as_str().into());
    Ok(r)
}

/// What one input is expected to become.
pub(super) enum Outcome {
    Outputs(Vec<Envelope>),
    Error(String),
}

pub(super) fn expected_outcome(line: &Line) -> Result<Outcome> {
    let Some(v) = &line.json else {
        bail!(
            "{}: not JSON; an expected line is a JSON value, an envelope, {{\"$outputs\": [..]}} or {{\"$error\": \"text\"}} (non-JSON output: {{\"$text\": \"..\"}})",
            line.at
        );
    };
    if let Some(map) = v.as_object().filter(|m| m.len() == 1) {
        if let Some(e) = map.get("$error") {
            let text = e
                .as_str()
                .ok_or_else(|| anyhow!("{}: `$error` must be a string", line.at))?;
            return Ok(Outcome::Error(text.to_owned()));
        }
        if let Some(outputs) = map.get("$outputs") {
            let list = outputs
                .as_array()
                .ok_or_else(|| anyhow!("{}: `$outputs` must be a list", line.at))?;
            return Ok(Outcome::Outputs(
                list.iter()
                    .map(|o| envelope(o, &line.at))
                    .collect::<Result<_>>()?,
            ));
        }
    }
    Ok(Outcome::Outputs(vec![envelope(v, &line.at)?]))
}
