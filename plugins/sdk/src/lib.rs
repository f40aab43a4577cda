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
//! sluice_sdk::transform!(process: process);
//!
//! // Natively the macro expands to nothing: the logic tests like any Rust function.
//! let out = process(Message::new(&b"hi"[..]).with_key(&b"k"[..])).unwrap();
//! assert_eq!((&*out.value, out.key.as_deref()), (&b"HI"[..], Some(&b"k"[..])));
//! ```
//!
//! A transform that keeps settings or scratch data between records implements [`Transform`] and
//! is exported with `transform!(MyType)`; one whose state must survive restarts and move with
//! its partition (counts, windows, deduplication) implements [`Stateful`] (keyed state and
//! timers the host checkpoints) and is exported with [`stateful!`]; a source plugin implements
//! [`Source`] and is exported with [`source!`]. The wire form that
//! carries batches across the boundary ([`wire`]) never shows; plugin logic is ordinary Rust
//! that unit-tests natively, without wasm.

use std::borrow::Cow;
use std::fmt;

mod call_host;
pub mod guest;
mod stateful;
pub use sluice_wire as wire;
pub use stateful::{Context, Domain, Fired, MemoryState, StateHost, Stateful};

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
                origin: match (with_origin, &self.origin) {
                    (true, Some(origin)) => Some(origin as &dyn wire::PutText),
                    _ => None,
                },
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

    /// The outputs as messages: what a native unit test of a [`Transform`] looks at.
    fn into_messages(self) -> Vec<Message<'a>>;
}

impl<'a> IntoOutputs<'a> for Message<'a> {
    fn put(self, buf: &mut Vec<u8>) -> u32 {
        self.put_wire(buf, false);
        1
    }

    fn into_messages(self) -> Vec<Message<'a>> {
        vec![self]
    }
}

impl<'a> IntoOutputs<'a> for Option<Message<'a>> {
    fn put(self, buf: &mut Vec<u8>) -> u32 {
        self.map_or(0, |m| IntoOutputs::put(m, buf))
    }

    fn into_messages(self) -> Vec<Message<'a>> {
        self.into_iter().collect()
    }
}

impl<'a> IntoOutputs<'a> for Vec<Message<'a>> {
    fn put(self, buf: &mut Vec<u8>) -> u32 {
        for m in &self {
            m.put_wire(buf, false);
        }
        self.len() as u32
    }

    fn into_messages(self) -> Vec<Message<'a>> {
        self
    }
}

/// The settings given to `init`: `--set key=value` on the command line, `settings` in a
/// pipelines file.
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
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Error::new(format!(
                    "setting `{key}={v}` is not a valid {}",
                    std::any::type_name::<T>()
                ))
            }),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A transform that keeps state between records (the `transform` world): built once per
/// instance from its settings, then handed each message in order. A plain function works too:
/// see [`transform!`].
pub trait Transform: Sized + 'static {
    /// Builds the transform from its settings; an error stops the plugin from loading and is
    /// shown to the user as is.
    fn init(settings: &Config) -> Result<Self, Error>;

    /// One message in: one output, none (`Option`), several (`Vec`), or a per-record error that
    /// the host routes by the pipeline's error policy.
    fn process<'a>(&mut self, msg: Message<'a>) -> Result<impl IntoOutputs<'a>, Error>;
}

/// A generator of records (the `source` world).
pub trait Source: Sized + 'static {
    /// Builds the generator from its settings; an error stops the plugin from loading.
    fn init(settings: &Config) -> Result<Self, Error>;

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

/// The bindings of both worlds, generated once here from the repository's `wit/`: a plugin
/// names no WIT path and carries no copy of it.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __bindings {
    pub mod transform {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "sluice:plugin/transform",
            default_bindings_module: "sluice_sdk::__bindings::transform",
            pub_export_macro: true,
            export_macro_name: "__export_transform_world",
        });
    }

    pub mod source {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "sluice:plugin/source",
            default_bindings_module: "sluice_sdk::__bindings::source",
            pub_export_macro: true,
            export_macro_name: "__export_source_world",
        });
    }

    pub mod stateful {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "sluice:plugin/stateful",
            default_bindings_module: "sluice_sdk::__bindings::stateful",
            pub_export_macro: true,
            export_macro_name: "__export_stateful_world",
        });
    }
}

/// The host's state and timers, through the `stateful` world's imports.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub struct __HostState;

#[cfg(target_arch = "wasm32")]
impl StateHost for __HostState {
    fn get_many(&mut self, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        __bindings::stateful::sluice::plugin::state::get_many(keys)
    }

    fn put_many(&mut self, entries: Vec<(Vec<u8>, Vec<u8>, u64)>) -> Result<(), String> {
        use __bindings::stateful::sluice::plugin::state::{self, Entry};
        let entries: Vec<Entry> = entries
            .into_iter()
            .map(|(key, value, ttl_ms)| Entry { key, value, ttl_ms })
            .collect();
        state::put_many(&entries)
    }

    fn delete_many(&mut self, keys: Vec<Vec<u8>>) {
        __bindings::stateful::sluice::plugin::state::delete_many(&keys)
    }

    fn scan(&mut self, prefix: &[u8], after: Option<&[u8]>, max: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        __bindings::stateful::sluice::plugin::state::scan(prefix, after, max)
    }

    fn register(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
        __bindings::stateful::sluice::plugin::timers::register(&key, at_ms, __wit_domain(domain))
    }

    fn delete_timer(&mut self, key: Vec<u8>, at_ms: i64, domain: Domain) {
        __bindings::stateful::sluice::plugin::timers::delete(&key, at_ms, __wit_domain(domain))
    }

    fn observe(&mut self, at_ms: i64) {
        __bindings::stateful::sluice::plugin::timers::observe_event_time(at_ms)
    }

    fn stream_time(&mut self) -> Option<i64> {
        __bindings::stateful::sluice::plugin::timers::stream_time()
    }
}

#[cfg(target_arch = "wasm32")]
fn __wit_domain(d: Domain) -> __bindings::stateful::sluice::plugin::timers::Domain {
    use __bindings::stateful::sluice::plugin::timers::Domain as W;
    match d {
        Domain::EventTime => W::EventTime,
        Domain::ProcessingTime => W::ProcessingTime,
    }
}

#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub fn __fired(fired: Vec<__bindings::stateful::sluice::plugin::timers::Fired>) -> Vec<Fired> {
    use __bindings::stateful::sluice::plugin::timers::Domain as W;
    fired
        .into_iter()
        .map(|f| Fired {
            key: f.key,
            at_ms: f.at_ms,
            domain: match f.domain {
                W::EventTime => Domain::EventTime,
                W::ProcessingTime => Domain::ProcessingTime,
            },
        })
        .collect()
}

/// Routes [`log`] to a world's `host.log` import. Each world has its own bindings, so a plugin
/// links those of its world only.
#[cfg(target_arch = "wasm32")]
macro_rules! log_to_host {
    ($name:ident, $world:ident) => {
        #[doc(hidden)]
        pub fn $name() {
            use __bindings::$world::sluice::plugin::host::{self, Level as L};
            __set_logger(|level, message| {
                let level = match level {
                    Level::Trace => L::Trace,
                    Level::Debug => L::Debug,
                    Level::Info => L::Info,
                    Level::Warn => L::Warn,
                    Level::Error => L::Error,
                };
                host::log(level, message)
            });
        }
    };
}

#[cfg(target_arch = "wasm32")]
log_to_host!(__log_to_transform_host, transform);
#[cfg(target_arch = "wasm32")]
log_to_host!(__log_to_source_host, source);
#[cfg(target_arch = "wasm32")]
log_to_host!(__log_to_stateful_host, stateful);

/// Exports a transform as the plugin's `transform` world. Either a function, with an optional
/// `init` that reads the settings:
///
/// ```ignore
/// sluice_sdk::transform!(process: process);
/// sluice_sdk::transform!(process: process, init: init);
/// ```
///
/// where `process` is a `fn(Message) -> Result<impl IntoOutputs, Error>` and `init` a
/// `fn(&Config) -> Result<(), E>` (`E`: [`Error`] or `String`); or a type that keeps state
/// between records, built from the settings by its `init`:
///
/// ```ignore
/// sluice_sdk::transform!(MyTransform); // MyTransform: sluice_sdk::Transform
/// ```
///
/// Expands to nothing when not compiling for wasm, so the plugin's logic builds and tests
/// natively.
#[macro_export]
macro_rules! transform {
    (process: $process:path $(, init: $init:path)? $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        pub struct __SluiceFunction;

        #[cfg(target_arch = "wasm32")]
        impl $crate::Transform for __SluiceFunction {
            fn init(_settings: &$crate::Config) -> ::std::result::Result<Self, $crate::Error> {
                $( $init(_settings).map_err($crate::Error::from)?; )?
                Ok(__SluiceFunction)
            }

            fn process<'a>(&mut self, msg: $crate::Message<'a>) -> ::std::result::Result<impl $crate::IntoOutputs<'a>, $crate::Error> {
                $process(msg)
            }
        }

        $crate::transform!(__SluiceFunction);
    };
    ($transform:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Plugin;

            impl $crate::__bindings::transform::Guest for Plugin {
                fn init(settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__log_to_transform_host();
                    $crate::guest::init_transform::<$transform>(settings)
                }

                fn process(batch: ::std::vec::Vec<u8>) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::guest::process_with::<$transform>(&batch)
                }
            }

            $crate::__bindings::transform::__export_transform_world!(Plugin);
        };
    };
}

/// Exports a [`Stateful`] type as the plugin's `stateful` world:
/// `sluice_sdk::stateful!(MyRollup);`. Expands to nothing when not compiling for wasm.
#[macro_export]
macro_rules! stateful {
    ($stateful:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Plugin;

            impl $crate::__bindings::stateful::Guest for Plugin {
                fn init(
                    settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__log_to_stateful_host();
                    $crate::guest::init_stateful::<$stateful>(settings)
                }

                fn process(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::guest::process_stateful_with::<$stateful>(
                        &batch,
                        &mut $crate::__HostState,
                    )
                }

                fn on_timer(
                    fired: ::std::vec::Vec<
                        $crate::__bindings::stateful::sluice::plugin::timers::Fired,
                    >,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::guest::on_timer_with::<$stateful>(
                        $crate::__fired(fired),
                        &mut $crate::__HostState,
                    )
                }

                fn check_state(
                    sample: ::std::vec::Vec<(::std::vec::Vec<u8>, ::std::vec::Vec<u8>)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::guest::check_state_with::<$stateful>(&sample)
                }
            }

            $crate::__bindings::stateful::__export_stateful_world!(Plugin);
        };
    };
}

/// Exports a [`Source`] type as the plugin's `source` world: `sluice_sdk::source!(MySource);`.
#[macro_export]
macro_rules! source {
    ($source:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Plugin;

            impl $crate::__bindings::source::Guest for Plugin {
                fn init(
                    settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__log_to_source_host();
                    $crate::guest::init_source::<$source>(settings)
                }

                fn next(
                    max: u32,
                    now_ms: i64,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::guest::next_with::<$source>(max, now_ms)
                }
            }

            $crate::__bindings::source::__export_source_world!(Plugin);
        };
    };
}
