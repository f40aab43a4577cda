//! Sluice: a stream-processing runtime whose business logic lives in WebAssembly plugins.
//! `main.rs` parses the command line and calls [`run`] or [`inspect`].

pub mod admin;
pub mod config;
pub mod connector;
pub(crate) mod context;
pub mod failure;
pub mod format;
pub mod golden;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod pipeline;
pub mod plugin;
pub mod record;
mod run;
pub mod scaffold;
pub mod state;
mod sync;

pub use pipeline::Stats;
pub use plugin::inspect::inspect;
pub use run::run;
