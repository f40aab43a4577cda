//! `stdin` / `stdout`: JSON lines.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{
    before_input_of, BoxFuture, RecordError, Refusals, Rejected, Sink, SinkClosed, Source,
    SourceBatch, Written,
};
use crate::format::jsonl;
use crate::record::{Origin, Record};

const READ_CHUNK: usize = 256 * 1024;

/// Reads JSON lines; each non-empty line is one record whose value is the line.
pub struct LineSource<R> {
    name: Arc<str>,
    reader: R,
    buf: BytesMut,
    line: u64,
    eof: bool,
}

impl LineSource<tokio::io::Stdin> {
    pub fn stdin() -> Self {
        LineSource::new("stdin", tokio::io::stdin())
    }
}

impl<R: AsyncRead + Unpin + Send> LineSource<R> {
    pub fn new(name: &'static str, reader: R) -> Self {
        LineSource {
            name: name.into(),
            reader,
            buf: BytesMut::new(),
            line: 0,
            eof: false,
        }
    }

    /// Takes the next complete line (or, at EOF, the unterminated rest) off the buffer.
    fn take_line(&mut self) -> Option<bytes::Bytes> {
        match memchr::memchr(b'\n', &self.buf) {
            Some(i) => Some(self.buf.split_to(i + 1).freeze()),
            None if self.eof && !self.buf.is_empty() => Some(self.buf.split().freeze()),
            None => None,
        }
    }

    async fn fill(&mut self, max: usize) -> Result<Option<SourceBatch>> {
        let mut batch = SourceBatch::default();
        loop {
            while batch.records.len() < max {
                let Some(raw) = self.take_line() else { break };
                self.line += 1;
                let line = raw.trim_ascii(); // the terminator and surrounding whitespace
                if line.is_empty() {
                    continue;
                }
                if let Err(message) = jsonl::validate(line) {
                    let position = format!("{}:{}", self.name, self.line);
                    batch.error = Some(RecordError {
                        position,
                        message,
                        input: None,
                    });
                    return Ok(Some(batch));
                }
                let mut record = Record::new(raw.slice_ref(line));
                record.origin = Some(Origin::Once(self.name.clone(), ':', self.line));
                batch.records.push(record);
            }
            // Hand over what we have rather than wait for a full batch.
            if batch.records.len() == max
                || (!batch.records.is_empty() && memchr::memchr(b'\n', &self.buf).is_none())
            {
                return Ok(Some(batch));
            }
            if self.eof {
                return Ok((!batch.records.is_empty()).then_some(batch));
            }
            self.buf.reserve(READ_CHUNK);
            let n = self
                .reader
                .read_buf(&mut self.buf)
                .await
                .with_context(|| format!("reading {}", self.name))?;
            self.eof = n == 0;
        }
    }
}

impl<R: AsyncRead + Unpin + Send> Source for LineSource<R> {
    fn spread_in_order(&self) -> bool {
        true
    }

    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(self.fill(max))
    }
}

/// Writes each record's value as one JSON line to stdout, flushed per batch.
pub struct StdoutSink {
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink {
            buf: Vec::with_capacity(READ_CHUNK),
        }
    }

    fn write_sync(&mut self, records: &[Record], refusals: Refusals) -> Result<Vec<Rejected>> {
        self.buf.clear();
        let mut rejected = Vec::new();
        // Where each record's line starts, to cut before a refused record's input.
        let mut starts = Vec::new();
        for (index, r) in records.iter().enumerate() {
            let start = self.buf.len();
            if refusals == Refusals::StopAtInput {
                starts.push(start);
            }
            if let Err(message) = jsonl::write_line(&r.value, &mut self.buf) {
                self.buf.truncate(start);
                rejected.push(Rejected { index, message });
                if refusals == Refusals::StopAtInput {
                    self.buf.truncate(starts[before_input_of(records, index)]);
                    break;
                }
            }
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(&self.buf).and_then(|()| out.flush()) {
            Ok(()) => Ok(rejected),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(SinkClosed.into()),
            Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn write<'a>(
        &'a mut self,
        records: &'a [Record],
        refusals: Refusals,
    ) -> BoxFuture<'a, Result<Written>> {
        // A blocking write of one buffer per batch (whole lines under the stdout lock, so
        // workers never interleave); flushed, hence durable, when it returns.
        Box::pin(async move {
            tokio::task::block_in_place(|| self.write_sync(records, refusals)).map(Written::done)
        })
    }

    fn fork(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(StdoutSink::new()))
    }

    fn keeps_write_order(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &'static [u8], max: usize) -> Vec<SourceBatch> {
        let mut src = LineSource::new("test", input);
        let mut out = Vec::new();
        while let Some(b) = src.fill(max).await.unwrap() {
            out.push(b);
        }
        out
    }

    #[tokio::test]
    async fn lines_become_records_with_positions() {
        let batches = read_all(b"{\"a\":1}\r\n\n  {\"a\":2}\n{\"a\":3}", 2).await;
        let all: Vec<_> = batches.iter().flat_map(|b| &b.records).collect();
        assert_eq!(
            all.iter().map(|r| &r.value[..]).collect::<Vec<_>>(),
            [&b"{\"a\":1}"[..], b"{\"a\":2}", b"{\"a\":3}"]
        );
        assert_eq!(
            all.iter().map(|r| r.position()).collect::<Vec<_>>(),
            ["test:1", "test:3", "test:4"]
        );
        assert!(batches
            .iter()
            .all(|b| b.records.len() <= 2 && b.error.is_none()));
    }

    #[tokio::test]
    async fn a_bad_line_ends_its_batch_and_reading_goes_on() {
        let batches = read_all(b"{\"a\":1}\n{oops\n{\"a\":3}\n", 10).await;
        assert_eq!(batches[0].records.len(), 1);
        let err = batches[0].error.as_ref().unwrap();
        assert_eq!(err.position, "test:2");
        assert!(err.message.starts_with("invalid JSON"), "{}", err.message);
        assert_eq!(batches[1].records[0].position(), "test:3");
    }
}
