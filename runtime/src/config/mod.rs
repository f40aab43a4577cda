//! What a run is made of: one pipeline from the command line (`args`), or several from a
//! pipelines file (`file`, TOML), each resolved into a `PipelineSpec` (`spec`), with endpoint
//! URIs overridable from the command line and `SLUICE_ENDPOINT_*`.

mod args;
mod file;
mod spec;
#[cfg(test)]
mod tests;

pub(crate) use args::parse_key_value;
pub use args::RunArgs;
pub use file::parse_pipelines_text;
pub use spec::{PipelineSpec, PluginOverrides, StatefulOptions};

/// The range each numeric setting may take, checked the same way on the command line and in
/// pipelines files.
pub(crate) mod limits {
    use std::ops::{RangeFrom, RangeInclusive};

    // u32 settings are parsed by clap through i64, u64 settings through u64.
    pub(crate) const BATCH_SIZE: RangeInclusive<i64> = 1..=65536;
    pub(crate) const WORKERS: RangeInclusive<i64> = 1..=1024;
    pub(crate) const MEMORY_LIMIT_MIB: RangeInclusive<i64> = 1..=4096;
    pub(crate) const BATCH_DEADLINE_MS: RangeFrom<u64> = 1..;
    pub(crate) const FUEL: RangeFrom<u64> = 1..;

    /// `value` for `key` in a pipelines file, or an error saying what range to use.
    pub(crate) fn check<V: Into<T>, T: PartialOrd + std::fmt::Display>(
        key: &str,
        value: Option<V>,
        range: &impl std::ops::RangeBounds<T>,
    ) -> Result<(), String> {
        use std::ops::Bound;
        let Some(v) = value.map(Into::into) else {
            return Ok(());
        };
        if range.contains(&v) {
            return Ok(());
        }
        Err(match (range.start_bound(), range.end_bound()) {
            (Bound::Included(lo), Bound::Included(hi)) => format!("{key}: use {lo} to {hi}"),
            (Bound::Included(lo), _) => format!("{key}: give {key} >= {lo}"),
            _ => format!("{key}: out of range"),
        })
    }
}
