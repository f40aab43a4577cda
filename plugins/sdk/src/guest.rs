//! The glue between the exported world functions and plugin code: decode a batch, call the
//! plugin per message, encode what it returns. Plain Rust, so it is tested natively.

use crate::{wire, Error, IntoOutputs, Message, Source};

/// Runs `process` over every message of a wire batch and returns the wire outcomes.
pub fn process_batch<'b, F, O>(input: &'b [u8], mut process: F) -> Result<Vec<u8>, String>
where
    F: FnMut(Message<'b>) -> Result<O, Error>,
    O: IntoOutputs<'b>,
{
    let mut r = wire::Reader::new(input);
    let n = r.count(wire::MIN_MESSAGE_SIZE).map_err(|e| e.to_string())?;
    // Outputs are usually about the size of the inputs.
    let mut out = Vec::with_capacity(input.len() + input.len() / 4 + 64);
    let at = wire::begin_count(&mut out);
    for _ in 0..n {
        let msg = Message::from_wire(r.message().map_err(|e| e.to_string())?);
        match process(msg) {
            Ok(outputs) => {
                let count_at = wire::begin_ok(&mut out);
                let count = outputs.put(&mut out);
                wire::patch_count(&mut out, count_at, count);
            }
            Err(e) => wire::put_err(&mut out, e.message()),
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
        fn init(_: &crate::Config) -> Result<Self, String> {
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
