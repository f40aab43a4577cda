//! Record <-> bytes codecs.

pub mod jsonl;
