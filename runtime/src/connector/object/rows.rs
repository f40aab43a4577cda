//! One object's rows, decoded lazily and handed out in batches as records positioned
//! `KEY#ROW` (shared by the listing source and the event-fed source).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::Format;
use crate::connector::RecordError;
use crate::format::{jsonl, parquet as pq};
use crate::record::{Origin, Record};

enum Rows {
    Parquet(pq::ParquetRows),
    Jsonl { data: Bytes, at: usize, line: u64 },
}

pub(super) struct OpenObject {
    pub(super) key: Arc<str>,
    /// The same key as record keys: one buffer shared by every row.
    key_bytes: Bytes,
    rows: Option<Rows>,
    /// Rows (records and bad rows) handed out so far.
    next_row: u64,
    ahead: VecDeque<Bytes>,
    /// Decoded but not yet handed out error, ending the rows before it.
    error: Option<(u64, String)>,
}

/// Rows handed out by [`OpenObject::take`].
pub(super) struct Taken {
    pub(super) records: Vec<Record>,
    pub(super) error: Option<RecordError>,
    /// Rows (records and bad rows) handed out so far, these included.
    pub(super) rows_done: u64,
    /// Nothing is left after these.
    pub(super) finished: bool,
}

impl OpenObject {
    /// The object `key` with content `data`; the first `skip` rows were done before.
    pub(super) fn new(key: &str, data: Bytes, format: Format, skip: u64) -> Self {
        let mut object = OpenObject {
            key: Arc::from(key),
            key_bytes: Bytes::from(key.to_owned()),
            rows: None,
            next_row: 0,
            ahead: VecDeque::new(),
            error: None,
        };
        match format {
            Format::Parquet => match pq::ParquetRows::open(data) {
                Ok(rows) => object.rows = Some(Rows::Parquet(rows)),
                Err(e) => object.error = Some((0, e)),
            },
            Format::Jsonl => {
                object.rows = Some(Rows::Jsonl {
                    data,
                    at: 0,
                    line: 0,
                })
            }
        }
        if skip > 0 {
            tracing::info!(key, rows = skip, "resuming a half-done object");
            while object.next_row < skip {
                object.fill(1);
                if object.ahead.pop_front().is_none() && object.error.take().is_none() {
                    break;
                }
                object.next_row += 1;
            }
        }
        object
    }

    /// Up to `max` rows; a bad row ends the batch as its error (messages start with `uri`).
    pub(super) fn take(&mut self, max: usize, uri: &str) -> Taken {
        self.fill(max);
        let n = self.ahead.len().min(max);
        let first = self.next_row;
        let records: Vec<Record> = self
            .ahead
            .drain(..n)
            .enumerate()
            .map(|(i, value)| Record {
                key: Some(self.key_bytes.clone()),
                value,
                origin: Some(Origin::At(self.key.clone(), '#', first + i as u64)),
                ..Default::default()
            })
            .collect();
        self.next_row += n as u64;
        // An error is handed out once the rows before it are.
        let error = if self.ahead.is_empty() {
            self.error.take().map(|(row, message)| {
                self.next_row += 1;
                RecordError {
                    position: format!("{}#{row}", self.key),
                    message: format!("{uri}: {message}"),
                    input: None,
                }
            })
        } else {
            None
        };
        if error.is_none() {
            self.fill(1); // to know whether this batch is the object's last
        }
        Taken {
            records,
            error,
            rows_done: self.next_row,
            finished: self.rows.is_none() && self.ahead.is_empty() && self.error.is_none(),
        }
    }

    /// Decodes until `want` rows are ahead, an error is found or the object ends.
    fn fill(&mut self, want: usize) {
        while self.ahead.len() < want && self.error.is_none() {
            let row = self.next_row + self.ahead.len() as u64;
            match &mut self.rows {
                None => return,
                Some(Rows::Parquet(rows)) => match rows.next_rows() {
                    Some(Ok(batch)) => self.ahead.extend(batch),
                    Some(Err(e)) => {
                        self.error = Some((row, e));
                        self.rows = None;
                    }
                    None => self.rows = None,
                },
                Some(Rows::Jsonl { data, at, line }) => {
                    if *at >= data.len() {
                        self.rows = None;
                        return;
                    }
                    let end = memchr::memchr(b'\n', &data[*at..]).map_or(data.len(), |n| *at + n);
                    let text = data.slice(*at..end);
                    *at = end + 1;
                    *line += 1;
                    let trimmed = text.trim_ascii();
                    if trimmed.is_empty() {
                        continue;
                    }
                    match jsonl::validate(trimmed) {
                        Ok(()) => self.ahead.push_back(text),
                        Err(e) => self.error = Some((row, format!("line {line}: {e}"))),
                    }
                }
            }
        }
    }
}
