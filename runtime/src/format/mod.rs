//! Record <-> bytes codecs.

pub mod jsonl;
pub mod parquet;
