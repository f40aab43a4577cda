//! Parquet objects <-> JSON records, through Arrow: a row is a JSON object whose fields are the
//! columns (nested lists and structs included), so plugins see the same JSON whether the object
//! was Parquet or JSON lines.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::reader::{infer_json_schema_from_iterator, ReaderBuilder};
use arrow_json::LineDelimitedWriter;
use arrow_schema::{ArrowError, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Rows decoded per step when reading an object.
const READ_BATCH_ROWS: usize = 1024;

/// The rows of one Parquet object, read a record batch at a time.
pub struct ParquetRows {
    batches: ParquetRecordBatchReader,
}

impl ParquetRows {
    /// Reads the footer and schema; fails on anything that is not a Parquet file.
    pub fn open(object: Bytes) -> Result<Self, String> {
        let batches = guarded(|| {
            ParquetRecordBatchReaderBuilder::try_new(object)
                .and_then(|b| b.with_batch_size(READ_BATCH_ROWS).build())
        })
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
        Ok(ParquetRows { batches })
    }

    /// The next rows as JSON objects (one `Bytes` each), or `None` after the last.
    pub fn next_rows(&mut self) -> Option<Result<Vec<Bytes>, String>> {
        let batch = match guarded(|| self.batches.next()) {
            Ok(None) => return None,
            Ok(Some(Ok(batch))) => batch,
            Ok(Some(Err(e))) => return Some(Err(format!("corrupt Parquet data: {e}"))),
            Err(e) => return Some(Err(format!("corrupt Parquet data: {e}"))),
        };
        Some(to_json_rows(&batch).map_err(|e| format!("cannot turn a Parquet row into JSON: {e}")))
    }
}

/// Runs the Parquet reader, turning a panic into an error: the parquet crate still asserts on
/// some corrupt metadata (found by tests/fuzz.rs), and one bad object must not stop the process.
fn guarded<T>(read: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        format!("the Parquet reader failed on it ({what})")
    })
}

fn to_json_rows(batch: &RecordBatch) -> Result<Vec<Bytes>, ArrowError> {
    let mut writer = LineDelimitedWriter::new(Vec::with_capacity(batch.num_rows() * 256));
    writer.write(batch)?;
    writer.finish()?;
    let lines = Bytes::from(writer.into_inner());
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut start = 0;
    for end in memchr_newlines(&lines) {
        rows.push(lines.slice(start..end));
        start = end + 1;
    }
    Ok(rows)
}

fn memchr_newlines(b: &[u8]) -> impl Iterator<Item = usize> + '_ {
    b.iter()
        .enumerate()
        .filter(|(_, &c)| c == b'\n')
        .map(|(i, _)| i)
}

/// Turns JSON records into Arrow columns under one schema: the one inferred from the first
/// records it sees (so every object a sink writes has the same columns).
#[derive(Default, Clone)]
pub struct ColumnEncoder {
    schema: Option<SchemaRef>,
}

/// A record that does not fit the columns, by its index in the input.
pub type Misfit = (usize, String);

impl ColumnEncoder {
    /// Columns inferred from example records (JSON objects, one per line) instead of from the
    /// first batch written.
    pub fn from_examples(lines: &[u8]) -> Result<Self, String> {
        let mut values = Vec::new();
        for (n, line) in lines.split(|&b| b == b'\n').enumerate() {
            if line.trim_ascii().is_empty() {
                continue;
            }
            match serde_json::from_slice::<serde_json::Value>(line) {
                Ok(v @ serde_json::Value::Object(_)) => values.push(v),
                Ok(_) => return Err(format!("line {}: not a JSON object", n + 1)),
                Err(e) => return Err(format!("line {}: invalid JSON: {e}", n + 1)),
            }
        }
        if values.is_empty() {
            return Err("no example records: give at least one JSON object".to_owned());
        }
        let schema = infer_json_schema_from_iterator(values.iter().map(Ok))
            .map_err(|e| format!("no columns fit the examples: {e}"))?;
        Ok(ColumnEncoder {
            schema: Some(Arc::new(schema)),
        })
    }

    /// Records decoded into these columns (e.g. a table's, with its field ids).
    pub fn with_schema(schema: SchemaRef) -> Self {
        ColumnEncoder {
            schema: Some(schema),
        }
    }

    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    /// Whether `other` encodes into the same columns (the same schema, not an equal one).
    pub fn same_columns(&self, other: &ColumnEncoder) -> bool {
        match (&self.schema, &other.schema) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Converts `values` to one record batch; values that are not JSON objects or do not fit
    /// the schema are left out and returned with the reason.
    pub fn encode(&mut self, values: &[&[u8]]) -> (Option<RecordBatch>, Vec<Misfit>) {
        // The common case: every value fits the known columns; decode the bytes directly.
        if let Some(schema) = &self.schema {
            if let Some(batch) = decode_bytes(schema, values) {
                return (Some(batch), Vec::new());
            }
        }
        self.encode_each(values)
    }

    /// The slow path: parse each value, infer the columns if there are none yet, and find the
    /// values that do not fit.
    fn encode_each(&mut self, values: &[&[u8]]) -> (Option<RecordBatch>, Vec<Misfit>) {
        let mut misfits = Vec::new();
        let mut parsed: Vec<(usize, serde_json::Value)> = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            match serde_json::from_slice::<serde_json::Value>(v) {
                Ok(o @ serde_json::Value::Object(_)) => parsed.push((i, o)),
                Ok(_) => misfits.push((i, "not a JSON object, so it has no columns".to_owned())),
                Err(e) => misfits.push((i, format!("invalid JSON: {e}"))),
            }
        }
        if parsed.is_empty() {
            return (None, misfits);
        }
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => match infer_json_schema_from_iterator(parsed.iter().map(|(_, v)| Ok(v))) {
                Ok(s) => {
                    let s = Arc::new(s);
                    self.schema = Some(s.clone());
                    s
                }
                Err(e) => {
                    misfits.extend(
                        parsed
                            .iter()
                            .map(|(i, _)| (*i, format!("no columns fit: {e}"))),
                    );
                    return (None, misfits);
                }
            },
        };
        let rows: Vec<&serde_json::Value> = parsed.iter().map(|(_, v)| v).collect();
        match decode(&schema, &rows) {
            Ok(batch) => (batch, sort(misfits)),
            Err(_) => {
                // Find the rows that do not fit, one by one; the rest go together.
                let mut fit = Vec::with_capacity(rows.len());
                for (i, v) in &parsed {
                    match decode(&schema, &[v]) {
                        Ok(_) => fit.push(v),
                        Err(e) => misfits
                            .push((*i, format!("does not fit the columns of this sink ({e})"))),
                    }
                }
                match decode(&schema, &fit) {
                    Ok(batch) => (batch, sort(misfits)),
                    Err(e) => {
                        misfits.extend(parsed.iter().map(|(i, _)| (*i, e.to_string())));
                        (None, sort(misfits))
                    }
                }
            }
        }
    }
}

/// All of `values` as one batch, straight from their bytes; `None` if any of them is not one
/// JSON object fitting the columns (the caller then finds which).
fn decode_bytes(schema: &SchemaRef, values: &[&[u8]]) -> Option<RecordBatch> {
    if values.is_empty() {
        return None;
    }
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(values.len())
        .with_strict_mode(true)
        .build_decoder()
        .ok()?;
    let mut buf = Vec::with_capacity(values.iter().map(|v| v.len() + 1).sum());
    for v in values {
        if v.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        buf.extend_from_slice(v);
        buf.push(b'\n');
    }
    let read = decoder.decode(&buf).ok()?;
    if read != buf.len() {
        return None;
    }
    let batch = decoder.flush().ok()??;
    // A value holding two objects would shift every row after it.
    (batch.num_rows() == values.len()).then_some(batch)
}

fn sort(mut misfits: Vec<Misfit>) -> Vec<Misfit> {
    misfits.sort_by_key(|m| m.0);
    misfits.dedup_by_key(|m| m.0);
    misfits
}

fn decode(
    schema: &SchemaRef,
    rows: &[&serde_json::Value],
) -> Result<Option<RecordBatch>, ArrowError> {
    if rows.is_empty() {
        return Ok(None);
    }
    // Strict: a field the schema does not have is an error, not silently dropped.
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len())
        .with_strict_mode(true)
        .build_decoder()?;
    decoder.serialize(rows)?;
    decoder.flush()
}

/// Writes record batches as one Parquet file (snappy, like pyarrow's default).
pub fn write_file(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
        .map_err(|e| format!("cannot start a Parquet file: {e}"))?;
    for batch in batches {
        writer
            .write(batch)
            .map_err(|e| format!("cannot write Parquet rows: {e}"))?;
    }
    writer
        .into_inner()
        .map_err(|e| format!("cannot finish the Parquet file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(values: &[&[u8]]) -> (Vec<String>, Vec<Misfit>) {
        let mut enc = ColumnEncoder::default();
        let (batch, misfits) = enc.encode(values);
        let file = write_file(enc.schema().unwrap(), &[batch.unwrap()]).unwrap();
        let mut rows = ParquetRows::open(Bytes::from(file)).unwrap();
        let mut out = Vec::new();
        while let Some(r) = rows.next_rows() {
            out.extend(
                r.unwrap()
                    .iter()
                    .map(|b| String::from_utf8(b.to_vec()).unwrap()),
            );
        }
        (out, misfits)
    }

    #[test]
    fn nested_records_survive() {
        let a = br#"{"user_id":"u1","latitude":39.5,"clicks":3,"events":[{"event_type":"login","timestamp":17}]}"#;
        let b = br#"{"user_id":"u2","latitude":-1.25,"clicks":0,"events":[]}"#;
        let (out, misfits) = round_trip(&[a, b]);
        assert!(misfits.is_empty());
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(parse(&out[0]), parse(std::str::from_utf8(a).unwrap()));
        assert_eq!(parse(&out[1]), parse(std::str::from_utf8(b).unwrap()));
    }

    #[test]
    fn misfits_are_named_and_the_rest_kept() {
        let mut enc = ColumnEncoder::default();
        let (batch, misfits) = enc.encode(&[br#"{"a":1,"b":"x"}"#, b"17", b"{oops"]);
        assert_eq!(batch.unwrap().num_rows(), 1);
        assert_eq!(misfits.len(), 2);
        assert!(misfits[0].1.contains("not a JSON object"), "{misfits:?}");
        assert!(misfits[1].1.contains("invalid JSON"), "{misfits:?}");
        // The schema is fixed now: a new field or a wrong type does not fit; the others do.
        let (batch, misfits) =
            enc.encode(&[br#"{"a":2}"#, br#"{"a":3,"c":true}"#, br#"{"a":{"x":1}}"#]);
        assert_eq!(batch.unwrap().num_rows(), 1);
        assert_eq!(misfits.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2]);
        assert!(misfits[0].1.contains("does not fit"), "{misfits:?}");
        // Two objects in one value are one misfit, not two rows.
        let (batch, misfits) = enc.encode(&[br#"{"a":4}"#, br#"{"a":5} {"a":6}"#]);
        assert_eq!(batch.unwrap().num_rows(), 1);
        assert_eq!(misfits.len(), 1, "{misfits:?}");
    }

    #[test]
    fn columns_from_examples() {
        let mut enc =
            ColumnEncoder::from_examples(b"{\"a\":1,\"b\":\"x\"}\n\n{\"a\":2,\"c\":1.5}\n")
                .unwrap();
        // A first batch without `c` still gets the column (null).
        let (batch, misfits) = enc.encode(&[br#"{"a":3}"#]);
        assert!(misfits.is_empty());
        assert_eq!(batch.unwrap().num_columns(), 3);
        let e = ColumnEncoder::from_examples(b"{\"a\":1}\n[1]\n")
            .err()
            .unwrap();
        assert_eq!(e, "line 2: not a JSON object");
        assert!(ColumnEncoder::from_examples(b"\n").is_err());
    }

    #[test]
    fn garbage_is_not_parquet() {
        let e = ParquetRows::open(Bytes::from_static(b"PAR1 not really"))
            .err()
            .unwrap();
        assert!(e.starts_with("not a readable Parquet file"), "{e}");
    }
}
