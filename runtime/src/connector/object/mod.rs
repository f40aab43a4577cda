//! Object storage endpoints (S3-compatible servers and local directories, through opendal).
//!
//! The sink rolls records into whole objects (by count, size and age) named after the source
//! position of their first record, so a replay overwrites instead of duplicating. The source
//! lists new objects under a prefix, emits their rows (one lane per object, so objects are
//! processed in parallel) and remembers durably which objects are done and how far a half-done
//! one got; with `list=events` it publishes an object-created event per object instead. The
//! event-fed source (`events=kafka://...`) reads the objects such events name, sharing a
//! bucket among the processes of a consumer group.

mod event_source;
pub mod events;
mod progress;
mod rows;
mod sink;
mod source;
mod tickets;
mod uri;

pub use event_source::EventSource;
pub use progress::Progress;
pub use sink::ObjectSink;
pub use source::ObjectSource;
pub use uri::ObjectUri;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Parquet,
}

impl Format {
    pub(super) fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    pub(super) fn reads(self, key: &str) -> bool {
        match self {
            Format::Jsonl => [".jsonl", ".ndjson", ".json"]
                .iter()
                .any(|e| key.ends_with(e)),
            Format::Parquet => key.ends_with(".parquet"),
        }
    }
}

/// The gist of an opendal error: the server's code and message, or the innermost cause.
pub(super) fn gist(e: &opendal::Error) -> String {
    let text = e.to_string();
    let field = |name: &str| {
        let start = text.find(&format!("{name}: \""))? + name.len() + 3;
        let len = text[start..].find('"')?;
        Some(&text[start..start + len])
    };
    if let (Some(code), Some(message)) = (field("code"), field("message")) {
        return format!("{code}: {message}");
    }
    let cause = text.rsplit("source: ").next().unwrap_or(&text);
    format!("{}: {}", e.kind(), crate::connector::one_line(&cause))
}
