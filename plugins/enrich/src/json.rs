//! Just enough JSON for enrich: find the spans of an object's top-level values, validate the
//! structure around them, and splice new values in, leaving every other byte alone.

use std::ops::Range;

/// Byte spans of the top-level values of the `N` wanted keys (no allocation per record).
pub struct Fields<const N: usize> {
    /// The span of the last value of each wanted key (the one JSON parsers keep).
    pub spans: [Option<Range<usize>>; N],
    /// The wanted keys present, in the order of their spans in the input (`found` of them).
    order: [usize; N],
    found: usize,
    /// Whether the object has any field at all.
    pub empty: bool,
    /// Position of the closing `}`.
    pub close: usize,
}

impl<const N: usize> Fields<N> {
    /// Notes the value of wanted key `w`. A repeated key keeps its last value, which moves it
    /// to the end of the input order.
    fn set(&mut self, w: usize, span: Range<usize>) {
        if self.spans[w].is_some() {
            let at = self.order[..self.found]
                .iter()
                .position(|&o| o == w)
                .unwrap_or(self.found - 1);
            self.order[at..self.found].rotate_left(1);
        } else {
            self.order[self.found] = w;
            self.found += 1;
        }
        self.spans[w] = Some(span);
    }
}

const MAX_DEPTH: usize = 128;

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags (in each byte's high bit) the bytes of `w` that are `"`, `\\` or below 0x20. Bits above
/// the lowest flagged byte may be spurious; the lowest one is exact.
#[inline(always)]
fn specials(w: u64) -> u64 {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero_byte(w ^ (ONES * u64::from(b'"')))
        | zero_byte(w ^ (ONES * u64::from(b'\\')))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
}

/// The index of the first byte at or after `i` that `flags` flags, 16 bytes per step (each loop
/// step costs an epoch check in wasm); near the end, the index where whole words stop.
#[inline(always)]
fn find(s: &[u8], mut i: usize, flags: fn(u64) -> u64) -> usize {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    while let Some(chunk) = s.get(i..i + 16) {
        let (lo, hi) = (flags(word(&chunk[..8])), flags(word(&chunk[8..])));
        if lo != 0 {
            return i + (lo.trailing_zeros() / 8) as usize;
        }
        if hi != 0 {
            return i + 8 + (hi.trailing_zeros() / 8) as usize;
        }
        i += 16;
    }
    if let Some(chunk) = s.get(i..i + 8) {
        let found = flags(word(chunk));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i
}

/// `s[i]` is `"`; returns the index after the closing quote. Scans 8 bytes at a time: strings
/// are most of a session's bytes.
#[inline(always)]
fn skip_string(s: &[u8], mut i: usize) -> Result<usize, String> {
    i += 1;
    loop {
        i = find(s, i, specials);
        match s.get(i) {
            None => return Err("unterminated string".into()),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => i += 2,
            Some(&c) if c < 0x20 => {
                return Err(format!("control character in a string at byte {i}"))
            }
            Some(_) => i += 1,
        }
    }
}

/// Skips one value starting at `i` (after whitespace); returns the index after it.
fn skip_value(s: &[u8], i: usize) -> Result<usize, String> {
    match s.get(i) {
        Some(b'"') => skip_string(s, i),
        Some(b'{' | b'[') => skip_container(s, i),
        Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => Ok(skip_scalar(s, i)),
        Some(&c) => Err(format!("unexpected `{}` at byte {i}", c as char)),
        None => Err("unterminated JSON value".into()),
    }
}

/// Flags the bytes that end a number or literal: `,`, `]`, `}`, whitespace and control bytes.
#[inline(always)]
fn scalar_end(w: u64) -> u64 {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero_byte(w ^ (ONES * u64::from(b',')))
        | zero_byte((w | (ONES * 0x20)) ^ (ONES * u64::from(b'}')))
        | (w.wrapping_sub(ONES * 0x21) & !w & HIGHS)
}

/// Numbers and `true`/`false`/`null` end at a separator; their content is checked only where
/// enrich reads it (`parse_number`).
#[inline(always)]
fn skip_scalar(s: &[u8], i: usize) -> usize {
    let mut i = find(s, i, scalar_end);
    while i < s.len() && !matches!(s[i], b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Flags the bytes of `w` that are `"` or a bracket (`[`/`{` and `]`/`}` differ only in bit
/// 0x20). As in [`specials`], only the lowest flag is exact.
#[inline(always)]
fn structural(w: u64) -> u64 {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let folded = w | (ONES * 0x20);
    zero_byte(w ^ (ONES * u64::from(b'"')))
        | zero_byte(folded ^ (ONES * u64::from(b'{')))
        | zero_byte(folded ^ (ONES * u64::from(b'}')))
}

/// Skips a nested object or array, jumping 8 bytes at a time from one string or bracket to the
/// next. Brackets must match and strings must end; the scalars in between are not checked
/// (enrich only reads top-level fields). Open brackets are kept as bits (1 = `[`), so nesting is
/// limited to 128 levels.
fn skip_container(s: &[u8], mut i: usize) -> Result<usize, String> {
    let mut open: u128 = 0;
    let mut depth = 0u32;
    loop {
        i = find(s, i, structural);
        let Some(&c) = s.get(i) else {
            return Err("unterminated JSON value".into());
        };
        match c {
            b'"' => i = skip_string(s, i)?,
            b'{' | b'[' => {
                if depth as usize == MAX_DEPTH {
                    return Err("JSON nested too deeply".into());
                }
                open = (open << 1) | u128::from(c == b'[');
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                if depth == 0 || (open & 1 == 1) != (c == b']') {
                    return Err(format!("unexpected `{}` at byte {i}", c as char));
                }
                open >>= 1;
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
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
    let mut fields = Fields {
        spans: [const { None }; N],
        order: [0; N],
        found: 0,
        empty: s.get(i) == Some(&b'}'),
        close: 0,
    };
    // Most keys are not wanted: a key whose length no wanted key has is passed over at once.
    let lengths = wanted.iter().fold(0u64, |m, w| {
        m | 1u64.checked_shl(w.len() as u32).unwrap_or(0)
    });
    if !fields.empty {
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
            let maybe = key.len() >= 64 || lengths & (1 << key.len()) != 0;
            let is = |w: &&str| w.len() == key.len() && w.as_bytes() == key;
            if let Some(w) = maybe.then(|| wanted.iter().position(is)).flatten() {
                fields.set(w, start..end);
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
        return Err(format!(
            "unexpected data after the JSON object at byte {}",
            close + 1
        ));
    }
    fields.close = close;
    Ok(fields)
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
pub fn rewrite<const N: usize>(
    s: &[u8],
    wanted: &[&str; N],
    fields: &Fields<N>,
    values: [&[u8]; N],
    out: &mut Vec<u8>,
) {
    let mut at = 0;
    for &i in &fields.order[..fields.found] {
        if let Some(span) = &fields.spans[i] {
            out.extend_from_slice(&s[at..span.start]);
            out.extend_from_slice(values[i]);
            at = span.end;
        }
    }
    out.extend_from_slice(&s[at..fields.close]);
    let mut first = fields.empty;
    for (i, span) in fields.spans.iter().enumerate() {
        if span.is_none() {
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
