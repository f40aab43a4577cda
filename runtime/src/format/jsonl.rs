//! JSON lines: one JSON value per line.

use serde::de::IgnoredAny;

/// Checks that `line` holds exactly one JSON value.
///
/// A strict single-pass check answers for the lines that are valid (nearly all of them);
/// a line it refuses goes through serde_json, which has the last word and the error message.
pub fn validate(line: &[u8]) -> Result<(), String> {
    if is_json(line) {
        return Ok(());
    }
    serde_json::from_slice::<IgnoredAny>(line)
        .map(drop)
        .map_err(|e| format!("invalid JSON: {e}"))
}

/// Appends `value` to `out` as one line. A value that spans lines is re-written compactly if it
/// is JSON; otherwise it cannot be written as one line and the error says so.
pub fn write_line(value: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if memchr::memchr2(b'\n', b'\r', value).is_none() {
        out.extend_from_slice(value);
    } else {
        let parsed: serde_json::Value = serde_json::from_slice(value)
            .map_err(|e| format!("value spans several lines and is not JSON ({e}), so it cannot be written as a JSON line"))?;
        serde_json::to_writer(&mut *out, &parsed).map_err(|e| e.to_string())?;
    }
    out.push(b'\n');
    Ok(())
}

/// The bytes that end a run of plain string content: the closing quote, an escape, and the
/// control characters JSON forbids raw.
const STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Nesting serde_json refuses past (its recursion limit); deeper text is left to it.
const MAX_DEPTH: u32 = 127;

/// Whether `text` is exactly one JSON value with optional whitespace around it. Never true for
/// text serde_json refuses; may be false for some it accepts (it then decides).
fn is_json(text: &[u8]) -> bool {
    let mut c = Cursor { s: text, i: 0 };
    c.ws();
    c.value(0) && {
        c.ws();
        c.i == text.len()
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.i += usize::from(hit);
        hit
    }

    fn value(&mut self, depth: u32) -> bool {
        match self.peek() {
            Some(b'{') => depth < MAX_DEPTH && self.object(depth + 1),
            Some(b'[') => depth < MAX_DEPTH && self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let hit = self.s[self.i..].starts_with(word);
        self.i += word.len() * usize::from(hit);
        hit
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> bool {
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return false,
        }
        if self.eat(b'.') && self.digits() == 0 {
            return false;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            return self.digits() > 0;
        }
        true
    }

    /// A string: no raw control characters, only JSON's escapes. One pass over the bytes with
    /// a table (strings in records are short: a vectorised search costs more to set up).
    fn string(&mut self) -> bool {
        let s = self.s;
        let mut i = self.i + 1; // past the opening quote
        loop {
            while i < s.len() && !STRING_STOP[s[i] as usize] {
                i += 1;
            }
            match s.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return true;
                }
                Some(b'\\') => match s.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        let hex = s.get(i + 2..i + 6);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return false;
                        }
                        i += 6;
                    }
                    _ => return false,
                },
                // A raw control character, or the end of the text.
                _ => return false,
            }
        }
    }

    fn array(&mut self, depth: u32) -> bool {
        self.i += 1;
        self.ws();
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            self.ws();
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
            self.ws();
        }
    }

    fn object(&mut self, depth: u32) -> bool {
        self.i += 1;
        self.ws();
        if self.eat(b'}') {
            return true;
        }
        loop {
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            self.ws();
            if !self.eat(b':') {
                return false;
            }
            self.ws();
            if !self.value(depth) {
                return false;
            }
            self.ws();
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
            self.ws();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_accepts(s: &[u8]) -> bool {
        serde_json::from_slice::<IgnoredAny>(s).is_ok()
    }

    #[test]
    fn validates() {
        assert!(validate(br#"{"a":1}"#).is_ok());
        assert!(validate(b"17").is_ok());
        let e = validate(br#"{"a":"#).unwrap_err();
        assert!(e.starts_with("invalid JSON: EOF while parsing"), "{e}");
        assert!(validate(br#"{"a":1} {"b":2}"#).is_err());
    }

    #[test]
    fn the_quick_check_agrees_with_serde_json_on_the_edge_cases() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for text in [
            r#" {"a" : [1, -0.5e+3, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9"], "b": {}} "#,
            "0",
            "-0",
            "1E5",
            "\"\"",
            "[]",
            "{}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "{1:2}",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\u{1}b\"",
            "tru",
            "nulls",
            "[1 2]",
            "\"unterminated",
            "",
            "  ",
            &deep(127),
            &deep(128),
            &deep(200),
        ] {
            let quick = is_json(text.as_bytes());
            let serde = serde_accepts(text.as_bytes());
            assert!(
                !quick || serde,
                "accepted what serde_json refuses: {text:?}"
            );
            assert_eq!(validate(text.as_bytes()).is_ok(), serde, "{text:?}");
            // Short of serde_json's own limit, the quick check accepts everything valid.
            if text.len() < 250 {
                assert_eq!(quick, serde, "{text:?}");
            }
        }
    }

    proptest! {
        /// Random mutations of a session-like line: whatever serde_json refuses, so does the
        /// quick check.
        #[test]
        fn never_accepts_what_serde_json_refuses(
            cut in 0usize..120,
            at in 0usize..120,
            byte in prop::sample::select(b"{}[]:,\"\\ -+.eE0123456789tfnu\x01x".to_vec()),
        ) {
            let base = br#"{"id":"a\"b","lat":-39.5e2,"n":[1,{"x":null},true],"s":"\u00e9"}"#;
            let mut text = base.to_vec();
            let at = at % (text.len() + 1);
            text.insert(at, byte);
            text.truncate(cut.max(1));
            prop_assert!(!is_json(&text) || serde_accepts(&text), "{:?}", String::from_utf8_lossy(&text));
            prop_assert_eq!(validate(&text).is_ok(), serde_accepts(&text));
        }
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
