//! Guest SDK for Sluice plugins.
//!
//! A transform plugin is a plain function; the SDK turns it into a WebAssembly component that
//! implements the `transform` world of `wit/plugin.wit`:
//!
//! ```
//! use sluice_sdk::{Error, Message};
//!
//! // Return a Message, an Option<Message> (filter) or a Vec<Message> (flat-map).
//! fn process(msg: Message<'_>) -> Result<Message<'_>, Error> {
//!     let upper = msg.value.to_ascii_uppercase();
//!     Ok(msg.with_value(upper))
//! }
//!
//! sluice_sdk::transform!(wit: "wit", process: process);
//!
//! // Natively the macro expands to nothing: the logic tests like any Rust function.
//! let out = process(Message::new(&b"hi"[..]).with_key(&b"k"[..])).unwrap();
//! assert_eq!((&*out.value, out.key.as_deref()), (&b"HI"[..], Some(&b"k"[..])));
//! ```
//!
//! A source plugin implements [`Source`] and is exported with [`source!`]. The wire form that
//! carries batches across the boundary ([`wire`]) never shows; plugin logic is ordinary Rust
//! that unit-tests natively, without wasm.

use std::borrow::Cow;
use std::fmt;

pub mod guest;
pub mod wire;

/// One record: what a plugin receives and returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message<'a> {
    pub key: Option<Cow<'a, [u8]>>,
    pub value: Cow<'a, [u8]>,
    pub headers: Vec<(Cow<'a, str>, Cow<'a, [u8]>)>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// The named output to route this message to; `None` is the pipeline's default sink.
    pub output: Option<Cow<'a, str>>,
    origin: Option<&'a str>,
}

impl<'a> Message<'a> {
    /// A message with this value and nothing else.
    pub fn new(value: impl Into<Cow<'a, [u8]>>) -> Self {
        Message {
            value: value.into(),
            ..Default::default()
        }
    }

    /// The same message with another value: key, headers and timestamp are kept.
    pub fn with_value(mut self, value: impl Into<Cow<'a, [u8]>>) -> Self {
        self.value = value.into();
        self
    }

    pub fn with_key(mut self, key: impl Into<Cow<'a, [u8]>>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(
        mut self,
        name: impl Into<Cow<'a, str>>,
        value: impl Into<Cow<'a, [u8]>>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_timestamp_ms(mut self, ts: i64) -> Self {
        self.timestamp_ms = Some(ts);
        self
    }

    /// Routes the message to a named output instead of the default one.
    pub fn to_output(mut self, name: impl Into<Cow<'a, str>>) -> Self {
        self.output = Some(name.into());
        self
    }

    /// Where this input came from (`topic/partition@offset`, an object key, `stdin:LINE`), if
    /// the host said so. Read-only: outputs do not carry it.
    pub fn origin(&self) -> Option<&'a str> {
        self.origin
    }

    /// Sets the origin; for tests that build inputs by hand.
    pub fn with_origin(mut self, origin: &'a str) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    fn from_wire(m: wire::MessageRef<'a>) -> Self {
        Message {
            key: m.key.map(Cow::Borrowed),
            value: Cow::Borrowed(m.value),
            headers: m
                .headers
                .into_iter()
                .map(|(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v)))
                .collect(),
            timestamp_ms: m.timestamp_ms,
            output: m.output.map(Cow::Borrowed),
            origin: m.origin,
        }
    }

    fn put_wire(&self, buf: &mut Vec<u8>, with_origin: bool) {
        wire::put_message(
            buf,
            &wire::MessageParts {
                key: self.key.as_deref(),
                value: &self.value,
                headers: &self.headers,
                timestamp_ms: self.timestamp_ms,
                origin: if with_origin { self.origin } else { None },
                output: self.output.as_deref(),
            },
        );
    }
}

/// A per-record failure: the host routes the record by the pipeline's error policy
/// (fail, skip, dead-letter). Return it for bad input; panics are traps and fail the whole batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_owned())
    }
}

/// What a transform may return for one input: one message, maybe one, or any number.
pub trait IntoOutputs<'a> {
    /// Appends the outputs to `buf` in wire form; returns how many.
    fn put(self, buf: &mut Vec<u8>) -> u32;
}

impl<'a> IntoOutputs<'a> for Message<'a> {
    fn put(self, buf: &mut Vec<u8>) -> u32 {
        self.put_wire(buf, false);
        1
    }
}

impl<'a> IntoOutputs<'a> for Option<Message<'a>> {
    fn put(self, buf: &mut Vec<u8>) -> u32 {
        self.map_or(0, |m| IntoOutputs::put(m, buf))
    }
}

impl<'a> IntoOutputs<'a> for Vec<Message<'a>> {
    fn put(self, buf: &mut Vec<u8>) -> u32 {
        for m in &self {
            m.put_wire(buf, false);
        }
        self.len() as u32
    }
}

/// The `key=value` pairs given to `init` (`--config key=value` on the command line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config(Vec<(String, String)>);

impl Config {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Config(pairs)
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `key` if present; the error names the key, the value and the expected type.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                format!(
                    "config `{key}={v}` is not a valid {}",
                    std::any::type_name::<T>()
                )
            }),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A generator of records (the `source` world).
pub trait Source: Sized {
    /// Builds the generator from its config; an error stops the plugin from loading.
    fn init(config: &Config) -> Result<Self, String>;

    /// Up to `max` new messages; fewer or none when nothing is due at `now_ms`.
    fn next(&mut self, max: u32, now_ms: i64) -> Result<Vec<Message<'static>>, Error>;
}

/// Log levels of the host's `log` import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

static LOGGER: std::sync::OnceLock<fn(Level, &str)> = std::sync::OnceLock::new();

/// Writes to the host's log (to stderr when running natively, e.g. in unit tests).
pub fn log(level: Level, message: &str) {
    match LOGGER.get() {
        Some(f) => f(level, message),
        None => eprintln!("[{level:?}] {message}"),
    }
}

#[doc(hidden)]
pub fn __set_logger(f: fn(Level, &str)) {
    let _ = LOGGER.set(f);
}

#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub use wit_bindgen as __wit_bindgen;

/// Exports a transform function as the plugin's `transform` world.
///
/// `wit` is the folder holding `plugin.wit`, relative to the plugin crate; `process` is a
/// `fn(Message) -> Result<impl IntoOutputs, Error>`; the optional `init` is a
/// `fn(&Config) -> Result<(), String>`. Expands to nothing when not compiling for wasm, so the
/// plugin's logic builds and tests natively.
#[macro_export]
macro_rules! transform {
    (wit: $wit:literal, process: $process:path $(, init: $init:path)? $(,)?) => {
        // Resolved here, at the call site, where the plugin's functions are in scope.
        #[cfg(target_arch = "wasm32")]
        fn __sluice_process(batch: &[u8]) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
            $crate::guest::process_batch(batch, $process)
        }

        #[cfg(target_arch = "wasm32")]
        fn __sluice_init(_config: &$crate::Config) -> ::std::result::Result<(), ::std::string::String> {
            $( return $init(_config); )?
            #[allow(unreachable_code)]
            Ok(())
        }

        #[cfg(target_arch = "wasm32")]
        mod __sluice_transform {
            $crate::__wit_bindgen::generate!({
                path: $wit,
                world: "sluice:plugin/transform",
                runtime_path: "sluice_sdk::__wit_bindgen::rt",
            });

            struct Plugin;

            impl Guest for Plugin {
                fn init(config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__set_logger(|level, message| sluice::plugin::host::log($crate::__level!(level), message));
                    super::__sluice_init(&$crate::Config::new(config))
                }

                fn process(batch: ::std::vec::Vec<u8>) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    super::__sluice_process(&batch)
                }
            }

            export!(Plugin);
        }
    };
}

/// Exports a [`Source`] implementation as the plugin's `source` world.
#[macro_export]
macro_rules! source {
    (wit: $wit:literal, source: $source:ty $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        type __SluiceSource = $source;

        #[cfg(target_arch = "wasm32")]
        mod __sluice_source {
            $crate::__wit_bindgen::generate!({
                path: $wit,
                world: "sluice:plugin/source",
                runtime_path: "sluice_sdk::__wit_bindgen::rt",
            });

            ::std::thread_local! {
                static STATE: ::std::cell::RefCell<::std::option::Option<super::__SluiceSource>> = const { ::std::cell::RefCell::new(None) };
            }

            struct Plugin;

            impl Guest for Plugin {
                fn init(config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__set_logger(|level, message| sluice::plugin::host::log($crate::__level!(level), message));
                    let source = <super::__SluiceSource as $crate::Source>::init(&$crate::Config::new(config))?;
                    STATE.with(|s| *s.borrow_mut() = Some(source));
                    Ok(())
                }

                fn next(max: u32, now_ms: i64) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        Some(source) => $crate::guest::next_batch(source, max, now_ms),
                        None => Err("`next` called before `init`".to_string()),
                    })
                }
            }

            export!(Plugin);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __level {
    ($level:expr) => {
        match $level {
            $crate::Level::Trace => sluice::plugin::host::Level::Trace,
            $crate::Level::Debug => sluice::plugin::host::Level::Debug,
            $crate::Level::Info => sluice::plugin::host::Level::Info,
            $crate::Level::Warn => sluice::plugin::host::Level::Warn,
            $crate::Level::Error => sluice::plugin::host::Level::Error,
        }
    };
}
