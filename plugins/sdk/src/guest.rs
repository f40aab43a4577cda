//! The glue between the exported world functions and plugin code: keep the instance's
//! transform or source, decode a batch, call the plugin per message, encode what it returns.
//! Plain Rust, so it is tested natively.

use std::any::Any;
use std::cell::RefCell;

use crate::call_host::CallHost;
use crate::{
    wire, Config, Context, Error, Fired, IntoOutputs, Message, Source, StateHost, Stateful,
    Transform,
};

thread_local! {
    /// The instance's transform or source, made by `init` (a plugin instance is one thread).
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn init_state<T: 'static>(make: impl FnOnce() -> Result<T, Error>) -> Result<(), String> {
    let state = make().map_err(|e| e.message().to_owned())?;
    STATE.with(|s| *s.borrow_mut() = Some(Box::new(state)));
    Ok(())
}

fn with_state<T: 'static, R>(f: impl FnOnce(&mut T) -> Result<R, String>) -> Result<R, String> {
    STATE.with(
        |s| match s.borrow_mut().as_mut().and_then(|b| b.downcast_mut::<T>()) {
            Some(state) => f(state),
            None => Err("called before `init`".to_owned()),
        },
    )
}

/// `init` of the transform world: builds `T` from the settings.
pub fn init_transform<T: Transform>(settings: Vec<(String, String)>) -> Result<(), String> {
    init_state(|| T::init(&Config::new(settings)))
}

/// `process` of the transform world: `T::process` over every message of the batch.
pub fn process_with<T: Transform>(batch: &[u8]) -> Result<Vec<u8>, String> {
    // The outputs are written before the next message: they may borrow the transform.
    with_state(|t: &mut T| each_message(batch, |msg, out| Ok(t.process(msg)?.put(out))))
}

/// `init` of the stateful world: builds `T` from the settings.
pub fn init_stateful<T: Stateful>(settings: Vec<(String, String)>) -> Result<(), String> {
    init_state(|| T::init(&Config::new(settings)))
}

/// `process` of the stateful world: `T::process` over every message, each with the lane's
/// state; a message's state changes reach the host only if it succeeds.
pub fn process_stateful_with<T: Stateful>(
    batch: &[u8],
    host: &mut dyn StateHost,
) -> Result<Vec<u8>, String> {
    let mut call = CallHost::new(host);
    let out = with_state(|t: &mut T| {
        each_message(batch, |msg, out| {
            let mut ctx = Context::new(&mut call);
            let n = t.process(msg, &mut ctx)?.put(out);
            ctx.commit()?;
            Ok(n)
        })
    })?;
    call.finish();
    Ok(out)
}

/// `check-state` of the stateful world: whether `T` reads the state it would take over.
pub fn check_state_with<T: Stateful>(sample: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    with_state(|t: &mut T| t.check_state(sample).map_err(|e| e.message().to_owned()))
}

/// `on-timer` of the stateful world: one outcome per fired timer.
pub fn on_timer_with<T: Stateful>(
    fired: Vec<Fired>,
    host: &mut dyn StateHost,
) -> Result<Vec<u8>, String> {
    let mut call = CallHost::new(host);
    let out = with_state(|t: &mut T| {
        let mut out = Vec::new();
        let at = wire::begin_count(&mut out);
        for timer in &fired {
            let count_at = wire::begin_ok(&mut out);
            let mut ctx = Context::new(&mut call);
            let made = t
                .on_timer(timer, &mut ctx)
                .and_then(|made| ctx.commit().map(|()| made));
            match made {
                Ok(made) => {
                    let n = made.put(&mut out);
                    wire::patch_count(&mut out, count_at, n);
                }
                Err(e) => {
                    out.truncate(count_at - 1);
                    wire::put_err(&mut out, e.message());
                }
            }
        }
        wire::patch_count(&mut out, at, fired.len() as u32);
        Ok(out)
    })?;
    call.finish();
    Ok(out)
}

/// `init` of the source world: builds `S` from the settings.
pub fn init_source<S: Source>(settings: Vec<(String, String)>) -> Result<(), String> {
    init_state(|| S::init(&Config::new(settings)))
}

/// `next` of the source world.
pub fn next_with<S: Source>(max: u32, now_ms: i64) -> Result<Vec<u8>, String> {
    with_state(|s: &mut S| next_batch(s, max, now_ms))
}

/// Runs `process` over every message of a wire batch and returns the wire outcomes.
pub fn process_batch<'b, F, O>(input: &'b [u8], mut process: F) -> Result<Vec<u8>, String>
where
    F: FnMut(Message<'b>) -> Result<O, Error>,
    O: IntoOutputs<'b>,
{
    each_message(input, |msg, out| Ok(process(msg)?.put(out)))
}

/// Calls `put` for every message of a wire batch: it appends the message's outputs to the
/// buffer and returns how many, or fails that message alone. Returns the wire outcomes.
fn each_message<'b>(
    input: &'b [u8],
    mut put: impl FnMut(Message<'b>, &mut Vec<u8>) -> Result<u32, Error>,
) -> Result<Vec<u8>, String> {
    let mut r = wire::Reader::new(input);
    let n = r.count(wire::MIN_MESSAGE_SIZE).map_err(|e| e.to_string())?;
    // Outputs are usually about the size of the inputs.
    let mut out = Vec::with_capacity(input.len() + input.len() / 4 + 64);
    let at = wire::begin_count(&mut out);
    for _ in 0..n {
        let msg = Message::from_wire(r.message().map_err(|e| e.to_string())?);
        let count_at = wire::begin_ok(&mut out);
        match put(msg, &mut out) {
            Ok(count) => wire::patch_count(&mut out, count_at, count),
            Err(e) => {
                // Whatever the failed message appended goes with it.
                out.truncate(count_at - 1);
                wire::put_err(&mut out, e.message());
            }
        }
    }
    r.finish().map_err(|e| e.to_string())?;
    wire::patch_count(&mut out, at, n);
    Ok(out)
}

/// Asks a source for its next messages and returns them as a wire batch.
pub fn next_batch<S: Source>(source: &mut S, max: u32, now_ms: i64) -> Result<Vec<u8>, String> {
    let messages = source
        .next(max, now_ms)
        .map_err(|e| e.message().to_owned())?;
    if messages.len() > max as usize {
        return Err(format!(
            "source returned {} messages but at most {max} were asked for",
            messages.len()
        ));
    }
    let mut out =
        Vec::with_capacity(messages.iter().map(|m| m.value.len() + 32).sum::<usize>() + 4);
    let at = wire::begin_count(&mut out);
    for m in &messages {
        m.put_wire(&mut out, true);
    }
    wire::patch_count(&mut out, at, messages.len() as u32);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MessageRef, Reader};
    use std::borrow::Cow;

    fn upper_or_fail(msg: Message<'_>) -> Result<Vec<Message<'_>>, Error> {
        match &*msg.value {
            b"bad" => Err(Error::new("bad value")),
            b"drop" => Ok(vec![]),
            v => {
                let upper = v.to_ascii_uppercase();
                Ok(vec![
                    msg.clone(),
                    Message {
                        value: Cow::Owned(upper),
                        ..msg
                    },
                ])
            }
        }
    }

    #[test]
    fn outcomes_follow_inputs() {
        let inputs = [
            MessageRef {
                value: b"ab",
                key: Some(b"k"),
                origin: Some("stdin:1"),
                ..Default::default()
            },
            MessageRef {
                value: b"bad",
                ..Default::default()
            },
            MessageRef {
                value: b"drop",
                ..Default::default()
            },
        ];
        let out = process_batch(&wire::encode_batch(&inputs), upper_or_fail).unwrap();
        let mut r = Reader::new(&out);
        assert_eq!(r.count(1).unwrap(), 3);
        assert_eq!(r.outcome().unwrap(), Ok(2));
        let first = r.message().unwrap();
        assert_eq!(
            (first.value, first.key, first.origin),
            (&b"ab"[..], Some(&b"k"[..]), None)
        );
        assert_eq!(r.message().unwrap().value, b"AB");
        assert_eq!(r.outcome().unwrap(), Err("bad value"));
        assert_eq!(r.outcome().unwrap(), Ok(0));
        r.finish().unwrap();
    }

    #[test]
    fn malformed_input_is_an_error() {
        let err = process_batch(&[1, 0, 0, 0, 9], |m: Message<'_>| Ok::<_, Error>(m)).unwrap_err();
        assert!(err.contains("malformed wire buffer"), "{err}");
    }

    struct Counter(u64);
    impl Source for Counter {
        fn init(_: &crate::Config) -> Result<Self, Error> {
            Ok(Counter(0))
        }
        fn next(&mut self, max: u32, _now: i64) -> Result<Vec<Message<'static>>, Error> {
            Ok((0..max)
                .map(|_| {
                    self.0 += 1;
                    Message::new(self.0.to_string().into_bytes())
                })
                .collect())
        }
    }

    /// Numbers each message, counting across batches: state lives in the instance.
    struct Numbering {
        next: u64,
        prefix: String,
    }

    impl Transform for Numbering {
        fn init(settings: &Config) -> Result<Self, Error> {
            Ok(Numbering {
                next: settings.parse("start")?.unwrap_or(0),
                prefix: settings.get("prefix").unwrap_or_default().to_owned(),
            })
        }

        fn process<'a>(&mut self, msg: Message<'a>) -> Result<impl IntoOutputs<'a>, Error> {
            self.next += 1;
            Ok(msg.with_value(format!("{}{}", self.prefix, self.next).into_bytes()))
        }
    }

    #[test]
    fn a_stateful_transform_keeps_its_state_across_batches() {
        assert_eq!(
            process_with::<Numbering>(&wire::encode_batch(&[])).unwrap_err(),
            "called before `init`"
        );
        let e = init_transform::<Numbering>(vec![("start".into(), "x".into())]).unwrap_err();
        assert!(e.contains("`start=x`"), "{e}");
        init_transform::<Numbering>(vec![
            ("start".into(), "10".into()),
            ("prefix".into(), "n".into()),
        ])
        .unwrap();
        let batch = wire::encode_batch(&[MessageRef::default(), MessageRef::default()]);
        let values = |out: Vec<u8>| -> Vec<Vec<u8>> {
            let mut r = Reader::new(&out);
            (0..r.count(1).unwrap())
                .map(|_| {
                    r.outcome().unwrap().unwrap();
                    r.message().unwrap().value.to_vec()
                })
                .collect()
        };
        assert_eq!(
            values(process_with::<Numbering>(&batch).unwrap()),
            [b"n11", b"n12"]
        );
        assert_eq!(
            values(process_with::<Numbering>(&batch).unwrap()),
            [b"n13", b"n14"]
        );
    }

    #[test]
    fn source_batches_decode() {
        let mut c = Counter::init(&crate::Config::default()).unwrap();
        let buf = next_batch(&mut c, 3, 0).unwrap();
        let msgs = wire::decode_batch(&buf).unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.value).collect::<Vec<_>>(),
            [b"1", b"2", b"3"]
        );
    }
}
