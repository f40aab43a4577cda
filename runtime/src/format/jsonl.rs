//! JSON lines: one JSON value per line.

use serde::de::IgnoredAny;

/// Checks that `line` holds exactly one JSON value.
pub fn validate(line: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<IgnoredAny>(line)
        .map(drop)
        .map_err(|e| format!("invalid JSON: {e}"))
}

/// Appends `value` to `out` as one line. A value that spans lines is re-written compactly if it
/// is JSON; otherwise it cannot be written as one line and the error says so.
pub fn write_line(value: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if !value.iter().any(|&b| b == b'\n' || b == b'\r') {
        out.extend_from_slice(value);
    } else {
        let parsed: serde_json::Value = serde_json::from_slice(value)
            .map_err(|e| format!("value spans several lines and is not JSON ({e}), so it cannot be written as a JSON line"))?;
        serde_json::to_writer(&mut *out, &parsed).map_err(|e| e.to_string())?;
    }
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(validate(br#"{"a":1}"#).is_ok());
        assert!(validate(b"17").is_ok());
        let e = validate(br#"{"a":"#).unwrap_err();
        assert!(e.starts_with("invalid JSON: EOF while parsing"), "{e}");
        assert!(validate(br#"{"a":1} {"b":2}"#).is_err());
    }

    #[test]
    fn multi_line_values_are_compacted_or_refused() {
        let mut out = Vec::new();
        write_line(b"{\n  \"a\": 1\n}", &mut out).unwrap();
        write_line(br#"{"b":2}"#, &mut out).unwrap();
        assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
        assert!(write_line(b"not\njson", &mut out)
            .unwrap_err()
            .contains("cannot be written as a JSON line"));
    }
}
