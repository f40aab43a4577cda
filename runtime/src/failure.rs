//! What happens to a record that fails, and the failure itself: shared by the pipeline (which
//! applies the policy), its dead letters and the configuration (which chooses the policy).

use std::sync::Arc;

/// What happens to a record that fails (bad input, a plugin error or trap, unwritable output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// Stop: write the outputs of every record before the bad one, then exit non-zero.
    #[default]
    Fail,
    /// Report the record on stderr, count it, and go on.
    Skip,
    /// Send the input record, unchanged, with where and why it failed, to the dead-letter
    /// endpoint (--dlq), count it, and go on.
    Dlq,
}

/// A record that failed, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub position: String,
    pub message: String,
    /// The plugin (name, sha256) that failed it, if one did.
    pub plugin: Option<(Arc<str>, String)>,
    /// The value that failed, where it is at hand (what the failing plugin or sink was given).
    pub value: Option<bytes::Bytes>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {}: {}", self.position, self.message)
    }
}
