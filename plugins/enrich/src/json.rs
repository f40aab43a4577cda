//! Just enough JSON for enrich: find the spans of an object's top-level values, validate the
//! structure around them, and splice new values in, leaving every other byte alone.

use std::ops::Range;

/// Byte spans of the top-level values of the `N` wanted keys (no allocation per record).
pub struct Fields<const N: usize> {
    /// The span of the last value of each wanted key (the one JSON parsers keep).
    pub spans: [Option<Range<usize>>; N],
    /// Whether the object has any field at all.
    pub empty: bool,
    /// Position of the closing `}`.
    pub close: usize,
}

const MAX_DEPTH: usize = 128;

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `s[i]` is `"`; returns the index after the closing quote.
fn skip_string(s: &[u8], mut i: usize) -> Result<usize, String> {
    i += 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Ok(i + 1),
            b'\\' => i += 2,
            c if c < 0x20 => return Err(format!("control character in a string at byte {i}")),
            _ => i += 1,
        }
    }
    Err("unterminated string".into())
}

/// Skips one value starting at `i` (after whitespace); returns the index after it.
fn skip_value(s: &[u8], i: usize) -> Result<usize, String> {
    let mut stack = [0u8; MAX_DEPTH];
    let mut depth = 0;
    let mut i = i;
    loop {
        i = skip_ws(s, i);
        let Some(&c) = s.get(i) else { return Err("unterminated JSON value".into()) };
        match c {
            b'"' => i = skip_string(s, i)?,
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return Err("JSON nested too deeply".into());
                }
                stack[depth] = if c == b'{' { b'}' } else { b']' };
                depth += 1;
                i += 1;
                continue;
            }
            b'}' | b']' => {
                if depth == 0 || stack[depth - 1] != c {
                    return Err(format!("unexpected `{}` at byte {i}", c as char));
                }
                depth -= 1;
                i += 1;
            }
            b',' | b':' if depth > 0 => {
                i += 1;
                continue;
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                while i < s.len() && matches!(s[i], b'-' | b'+' | b'.' | b'0'..=b'9' | b'e' | b'E' | b'a'..=b'z') {
                    i += 1;
                }
            }
            _ => return Err(format!("unexpected `{}` at byte {i}", c as char)),
        }
        if depth == 0 {
            return Ok(i);
        }
    }
}

/// Scans a JSON object's top level, noting where the values of the `wanted` keys are.
pub fn scan_object<const N: usize>(s: &[u8], wanted: &[&str; N]) -> Result<Fields<N>, String> {
    let mut i = skip_ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return Err("record is not a JSON object".into());
    }
    i = skip_ws(s, i + 1);
    let mut spans = [const { None }; N];
    let empty = s.get(i) == Some(&b'}');
    if !empty {
        loop {
            if s.get(i) != Some(&b'"') {
                return Err(format!("expected a field name at byte {i}"));
            }
            let end = skip_string(s, i)?;
            let key = &s[i + 1..end - 1];
            i = skip_ws(s, end);
            if s.get(i) != Some(&b':') {
                return Err(format!("expected `:` at byte {i}"));
            }
            let start = skip_ws(s, i + 1);
            let end = skip_value(s, start)?;
            if let Some(w) = wanted.iter().position(|w| w.as_bytes() == key) {
                spans[w] = Some(start..end);
            }
            i = skip_ws(s, end);
            match s.get(i) {
                Some(b',') => i = skip_ws(s, i + 1),
                Some(b'}') => break,
                Some(_) => return Err(format!("expected `,` or `}}` at byte {i}")),
                None => return Err("unterminated JSON object".into()),
            }
        }
    }
    let close = i;
    if skip_ws(s, close + 1) != s.len() {
        return Err(format!("unexpected data after the JSON object at byte {}", close + 1));
    }
    Ok(Fields { spans, empty, close })
}

/// Parses a JSON number span.
pub fn parse_number(span: &[u8]) -> Option<f64> {
    let first = *span.first()?;
    if !(first == b'-' || first.is_ascii_digit()) {
        return None;
    }
    std::str::from_utf8(span).ok()?.parse().ok()
}

/// Writes `s` with the wanted key `i` set to `values[i]`: existing values replaced in place, new
/// keys appended before the closing brace.
pub fn rewrite<const N: usize>(s: &[u8], wanted: &[&str; N], fields: &Fields<N>, values: [&[u8]; N], out: &mut Vec<u8>) {
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_unstable_by_key(|&i| fields.spans[i].as_ref().map_or(usize::MAX, |r| r.start));
    let mut at = 0;
    for &i in &order {
        if let Some(span) = &fields.spans[i] {
            out.extend_from_slice(&s[at..span.start]);
            out.extend_from_slice(values[i]);
            at = span.end;
        }
    }
    out.extend_from_slice(&s[at..fields.close]);
    let mut first = fields.empty;
    for &i in &order {
        if fields.spans[i].is_none() {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(wanted[i].as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(values[i]);
        }
    }
    out.extend_from_slice(&s[fields.close..]);
}
