//! Sluice: a stream-processing runtime whose business logic lives in WebAssembly plugins.
//! `main.rs` parses the command line and calls [`run`] or [`inspect`].

pub mod admin;
pub mod config;
pub mod connector;
pub mod context;
pub mod failure;
pub mod format;
pub mod golden;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod record;
mod run;
pub mod scaffold;

pub use plugin::inspect::inspect;
pub use run::run;
