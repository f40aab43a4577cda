//! The record that flows through a pipeline, and where it came from.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// One record. Bytes are reference-counted slices, so records decoded from one buffer share it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// Where the record came from. Outputs inherit the origin of the input they were made from,
    /// so errors can always name the source record.
    pub origin: Option<Origin>,
    /// The named output a plugin routed this record to; `None` is the pipeline's sink.
    pub output: Option<String>,
}

/// Where a record came from: `topic/PARTITION@OFFSET`, `KEY#ROW`, `stdin:LINE`,
/// `mock.wasm@RUN-PID#SEQ`, or any text. The part before the number is shared by every record of a
/// partition, object or stream, and the whole is formatted only when shown or handed to a
/// plugin (straight into the wire buffer): reading a record costs no allocation for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A position the source reads the same record at again after a restart: a Kafka offset
    /// (`topic/3@1200`) or an object's row (`KEY#ROW`). `{0}{1}{2}`.
    At(Arc<str>, char, u64),
    /// A position in a stream read once: stdin's lines (`stdin:LINE`), a generator's records
    /// (`mock.wasm@RUN-PID#SEQ`). Formatted as [`Origin::At`], never replayed.
    Once(Arc<str>, char, u64),
    Text(Arc<str>),
}

impl Origin {
    /// The lane (the position's prefix and separator) and the number, where a restarted source
    /// reads the same record at the same position again.
    pub fn replayable(&self) -> Option<(&str, char, u64)> {
        match self {
            Origin::At(prefix, sep, n) => Some((prefix, *sep, *n)),
            Origin::Once(..) | Origin::Text(_) => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::At(prefix, sep, n) | Origin::Once(prefix, sep, n) => {
                write!(f, "{prefix}{sep}{n}")
            }
            Origin::Text(text) => f.write_str(text),
        }
    }
}

impl sluice_wire::PutText for Origin {
    fn put_text(&self, buf: &mut Vec<u8>) {
        match self {
            Origin::At(prefix, sep, n) | Origin::Once(prefix, sep, n) => {
                buf.extend_from_slice(prefix.as_bytes());
                buf.extend_from_slice(sep.encode_utf8(&mut [0; 4]).as_bytes());
                sluice_wire::put_decimal(buf, *n);
            }
            Origin::Text(text) => buf.extend_from_slice(text.as_bytes()),
        }
    }
}

impl From<&str> for Origin {
    fn from(text: &str) -> Self {
        Origin::Text(text.into())
    }
}

impl Record {
    pub fn new(value: impl Into<Bytes>) -> Self {
        Record {
            value: value.into(),
            ..Default::default()
        }
    }

    /// The lane (`topic/3@`, `in/a.parquet#`) and position of a record whose source reads the
    /// same record at the same position again after a restart (see [`Origin::replayable`]).
    pub fn lane(&self) -> Option<(String, u64)> {
        let (prefix, sep, n) = self.origin.as_ref()?.replayable()?;
        Some((format!("{prefix}{sep}"), n))
    }

    /// How to name this record in a message.
    pub fn position(&self) -> String {
        match &self.origin {
            Some(origin) => origin.to_string(),
            None => "(unknown position)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_replayable_origins_have_lanes() {
        let with = |origin| Record {
            origin: Some(origin),
            ..Default::default()
        };
        assert_eq!(
            with(Origin::At("x/1".into(), '@', 7)).lane(),
            Some(("x/1@".to_owned(), 7))
        );
        assert_eq!(
            with(Origin::At("in/a.parquet".into(), '#', 7)).lane(),
            Some(("in/a.parquet#".to_owned(), 7))
        );
        // A generator's records look like object rows, but are never read again.
        assert_eq!(
            with(Origin::Once("mock.wasm@1-2".into(), '#', 7)).lane(),
            None
        );
        assert_eq!(with(Origin::Once("stdin".into(), ':', 7)).lane(), None);
        assert_eq!(Record::new("v").lane(), None);
    }

    #[test]
    fn origins_format_when_shown() {
        let at = Origin::At("user_sessions/3".into(), '@', 1200);
        assert_eq!(at.to_string(), "user_sessions/3@1200");
        assert_eq!(Origin::from("stdin:7").to_string(), "stdin:7");
        for (origin, text) in [
            (&at, "user_sessions/3@1200"),
            (&Origin::At("k".into(), '#', 0), "k#0"),
        ] {
            let mut buf = Vec::new();
            sluice_wire::PutText::put_text(origin, &mut buf);
            assert_eq!(buf, text.as_bytes());
        }
        let mut r = Record::new("v");
        assert_eq!(r.position(), "(unknown position)");
        r.origin = Some(at);
        assert_eq!(r.position(), "user_sessions/3@1200");
    }
}
