//! Property tests over the input decoders: whatever bytes arrive (JSON lines, Parquet objects,
//! pipelines files, URIs), the answer is a value or an error, never a panic. The suite runs
//! PROPTEST_CASES cases per property (256 by default); longer runs:
//! `PROPTEST_CASES=100000 cargo test --release -p sluice-runtime --test fuzz`.

use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use sluice::config::parse_pipelines_text;
use sluice::connector::kafka::KafkaUri;
use sluice::connector::object::ObjectUri;
use sluice::format::jsonl;
use sluice::format::parquet::{write_file, ColumnEncoder, ParquetRows};

/// A small valid Parquet file with nested columns, to mutate.
fn parquet_file() -> Vec<u8> {
    let mut enc = ColumnEncoder::default();
    let rows: Vec<Vec<u8>> = (0..40)
        .map(|i| format!(r#"{{"id":{i},"name":"n{i}","score":{i}.5,"tags":["a","b"],"events":[{{"t":{i},"k":"x"}}]}}"#).into_bytes())
        .collect();
    let values: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
    let (batch, misfits) = enc.encode(&values);
    assert!(misfits.is_empty());
    write_file(enc.schema().unwrap(), &[batch.unwrap()]).unwrap()
}

/// Reads every row; Ok(rows) or the first error.
fn read_all(bytes: Vec<u8>) -> Result<usize, String> {
    let mut rows = ParquetRows::open(Bytes::from(bytes))?;
    let mut n = 0;
    while let Some(batch) = rows.next_rows() {
        n += batch?.len();
    }
    Ok(n)
}

proptest! {
    #[test]
    fn json_lines_never_panic(line in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = jsonl::validate(&line);
        let mut out = Vec::new();
        if jsonl::write_line(&line, &mut out).is_ok() {
            prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line out");
        }
    }

    #[test]
    fn arbitrary_bytes_are_refused_as_parquet_without_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        // Without the magic at both ends nothing is Parquet; the answer is an error, not rows.
        let framed = bytes.len() >= 8 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1");
        if !framed {
            prop_assert!(read_all(bytes).is_err());
        } else {
            let _ = read_all(bytes);
        }
    }

    #[test]
    fn damaged_parquet_files_are_errors_not_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut file = parquet_file();
        for (at, byte) in flips {
            let i = at.index(file.len());
            file[i] ^= byte | 1;
        }
        if truncate {
            file.truncate(cut.index(file.len()));
        }
        let _ = read_all(file);
    }

    #[test]
    fn column_encoding_never_panics(values in proptest::collection::vec(
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..60),
            "[{}\\[\\]\":,a-z0-9 .-]{0,60}".prop_map(String::into_bytes),
            Just(br#"{"a":1,"b":"x","c":[1,2],"d":{"e":null}}"#.to_vec()),
        ],
        1..20,
    )) {
        let mut enc = ColumnEncoder::default();
        let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let (batch, misfits) = enc.encode(&values);
        let rows = batch.map_or(0, |b| b.num_rows());
        prop_assert_eq!(rows + misfits.len(), values.len(), "every value is a row or a misfit");
    }

    #[test]
    fn pipelines_files_never_panic(text in "(\\[\\[pipeline\\]\\]\n|\\[endpoints\\]\n|[a-z_]{1,12} = (\"[a-z:/.?=&0-9]{0,20}\"|[0-9]{1,6}|\\[\"[a-z]{0,8}\"\\]|true)\n|[ -~]{0,30}\n){0,12}") {
        let _ = parse_pipelines_text(&text, Path::new("/tmp"));
    }

    #[test]
    fn uris_never_panic(uri in "(s3|file|kafka|mem|http|)(://)?[ -~]{0,60}") {
        let _ = ObjectUri::parse(&uri);
        let _ = KafkaUri::parse(&uri);
    }
}
