//! Record <-> bytes codecs.

pub mod json_diff;
pub mod jsonl;
pub mod parquet;
