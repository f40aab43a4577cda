//! The Sluice wire form v1 (see `wit/WIRE.md`): how a batch of messages and a batch of outcomes
//! travel as one flat byte buffer. Used by the guest SDK and by the host, so both sides agree by
//! construction. Decoding borrows from the buffer and never panics on bad input.

use std::fmt;

pub const FLAG_KEY: u32 = 1;
pub const FLAG_TIMESTAMP: u32 = 2;
pub const FLAG_ORIGIN: u32 = 4;
pub const FLAG_OUTPUT: u32 = 8;
const KNOWN_FLAGS: u32 = FLAG_KEY | FLAG_TIMESTAMP | FLAG_ORIGIN | FLAG_OUTPUT;

const OUTCOME_OK: u8 = 0;
const OUTCOME_ERR: u8 = 1;

/// A buffer that does not follow the wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub offset: usize,
    pub what: &'static str,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed wire buffer at byte {}: {}",
            self.offset, self.what
        )
    }
}

impl std::error::Error for WireError {}

/// One message as it lies in a buffer: every field borrows from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageRef<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub timestamp_ms: Option<i64>,
    /// Where an input came from (topic/partition/offset, object key, line): read-only metadata.
    pub origin: Option<&'a str>,
    /// The named output an output message goes to; `None` is the default output.
    pub output: Option<&'a str>,
}

/// The fields of a message to encode; headers are anything that reads as (str, bytes).
pub struct MessageParts<'m, H, V> {
    pub key: Option<&'m [u8]>,
    pub value: &'m [u8],
    pub headers: &'m [(H, V)],
    pub timestamp_ms: Option<i64>,
    /// Written straight into the buffer (a `&str`, or a value that writes itself there).
    pub origin: Option<&'m dyn PutText>,
    pub output: Option<&'m str>,
}

/// Text that appends itself (UTF-8) to a buffer: a `&str`, or a value whose parts are written
/// without first being formatted into a string of their own (the host's record origins).
pub trait PutText {
    fn put_text(&self, buf: &mut Vec<u8>);
}

impl PutText for &str {
    fn put_text(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.as_bytes());
    }
}

/// Appends `n` in decimal, without the formatting machinery (this runs once per record).
pub fn put_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Appends one message to `buf`.
pub fn put_message<H: AsRef<str>, V: AsRef<[u8]>>(buf: &mut Vec<u8>, m: &MessageParts<'_, H, V>) {
    let mut flags = 0;
    if m.key.is_some() {
        flags |= FLAG_KEY;
    }
    if m.timestamp_ms.is_some() {
        flags |= FLAG_TIMESTAMP;
    }
    if m.origin.is_some() {
        flags |= FLAG_ORIGIN;
    }
    if m.output.is_some() {
        flags |= FLAG_OUTPUT;
    }
    buf.reserve(16 + m.value.len() + m.key.map_or(0, <[u8]>::len));
    put_u32(buf, flags);
    if let Some(key) = m.key {
        put_bytes(buf, key);
    }
    put_bytes(buf, m.value);
    if let Some(ts) = m.timestamp_ms {
        buf.extend_from_slice(&ts.to_le_bytes());
    }
    put_u32(buf, len_u32(m.headers.len()));
    for (name, value) in m.headers {
        put_bytes(buf, name.as_ref().as_bytes());
        put_bytes(buf, value.as_ref());
    }
    if let Some(origin) = m.origin {
        let at = begin_count(buf);
        origin.put_text(buf);
        let len = len_u32(buf.len() - at - 4);
        buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    if let Some(output) = m.output {
        put_bytes(buf, output.as_bytes());
    }
}

/// Appends a message given as a [`MessageRef`].
pub fn put_message_ref(buf: &mut Vec<u8>, m: &MessageRef<'_>) {
    put_message(
        buf,
        &MessageParts {
            key: m.key,
            value: m.value,
            headers: &m.headers,
            timestamp_ms: m.timestamp_ms,
            origin: m.origin.as_ref().map(|o| o as &dyn PutText),
            output: m.output,
        },
    );
}

/// Starts a batch or an outcome list: writes a count placeholder and returns its position,
/// to be filled in by [`patch_count`].
pub fn begin_count(buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    put_u32(buf, 0);
    at
}

/// Fills in a count written by [`begin_count`].
pub fn patch_count(buf: &mut [u8], at: usize, count: u32) {
    buf[at..at + 4].copy_from_slice(&count.to_le_bytes());
}

/// Starts a successful outcome; returns the position of its output count.
pub fn begin_ok(buf: &mut Vec<u8>) -> usize {
    buf.push(OUTCOME_OK);
    begin_count(buf)
}

/// Appends a failed outcome.
pub fn put_err(buf: &mut Vec<u8>, message: &str) {
    buf.push(OUTCOME_ERR);
    put_bytes(buf, message.as_bytes());
}

/// Encodes a whole batch.
pub fn encode_batch<'a>(messages: impl IntoIterator<Item = &'a MessageRef<'a>>) -> Vec<u8> {
    let mut buf = Vec::new();
    let at = begin_count(&mut buf);
    let mut n = 0;
    for m in messages {
        put_message_ref(&mut buf, m);
        n += 1;
    }
    patch_count(&mut buf, at, n);
    buf
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(buf, len_u32(bytes.len()));
    buf.extend_from_slice(bytes);
}

fn len_u32(len: usize) -> u32 {
    // Buffers live in a 32-bit wasm memory, so no field can reach 4 GiB.
    u32::try_from(len).expect("wire field larger than 4 GiB")
}

/// A cursor over a wire buffer.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn err(&self, what: &'static str) -> WireError {
        WireError {
            offset: self.pos,
            what,
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(what)),
        }
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1, "truncated outcome tag")?[0])
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4, "truncated length or count")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        let b = self.take(8, "truncated timestamp")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n, what)
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        let at = self.pos;
        let b = self.bytes(what)?;
        std::str::from_utf8(b).map_err(|_| WireError {
            offset: at,
            what: "text field is not UTF-8",
        })
    }

    /// Reads one message.
    pub fn message(&mut self) -> Result<MessageRef<'a>, WireError> {
        let flags = self.u32()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(WireError {
                offset: self.pos - 4,
                what: "unknown message flags",
            });
        }
        let key = if flags & FLAG_KEY != 0 {
            Some(self.bytes("truncated key")?)
        } else {
            None
        };
        let value = self.bytes("truncated value")?;
        let timestamp_ms = if flags & FLAG_TIMESTAMP != 0 {
            Some(self.i64()?)
        } else {
            None
        };
        let n_headers = self.u32()? as usize;
        let mut headers = Vec::new();
        if n_headers > 0 {
            // Each header takes at least 8 bytes: bound the allocation by what is really there.
            if n_headers > self.remaining() / 8 {
                return Err(self.err("header count exceeds the buffer"));
            }
            headers.reserve_exact(n_headers);
            for _ in 0..n_headers {
                let name = self.str("truncated header name")?;
                let value = self.bytes("truncated header value")?;
                headers.push((name, value));
            }
        }
        let origin = if flags & FLAG_ORIGIN != 0 {
            Some(self.str("truncated origin")?)
        } else {
            None
        };
        let output = if flags & FLAG_OUTPUT != 0 {
            Some(self.str("truncated output name")?)
        } else {
            None
        };
        Ok(MessageRef {
            key,
            value,
            headers,
            timestamp_ms,
            origin,
            output,
        })
    }

    /// Reads the head of one outcome: `Ok(n)` outputs follow, or the record's error text.
    pub fn outcome(&mut self) -> Result<Result<u32, &'a str>, WireError> {
        match self.u8()? {
            OUTCOME_OK => Ok(Ok(self.u32()?)),
            OUTCOME_ERR => Ok(Err(self.str("truncated error text")?)),
            _ => Err(WireError {
                offset: self.pos - 1,
                what: "unknown outcome tag",
            }),
        }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Checks that nothing follows the last item.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.err("trailing bytes after the last item"))
        }
    }

    /// Reads a count that announces `min_size`-byte items, refusing counts the buffer cannot hold.
    pub fn count(&mut self, min_size: usize) -> Result<u32, WireError> {
        let n = self.u32()?;
        if n as usize > self.remaining() / min_size {
            return Err(WireError {
                offset: self.pos - 4,
                what: "count exceeds the buffer",
            });
        }
        Ok(n)
    }
}

/// Smallest encoded message: flags + value length + header count.
pub const MIN_MESSAGE_SIZE: usize = 12;
/// Smallest encoded outcome: tag + count.
pub const MIN_OUTCOME_SIZE: usize = 5;

/// Decodes a whole batch.
pub fn decode_batch(buf: &[u8]) -> Result<Vec<MessageRef<'_>>, WireError> {
    let mut r = Reader::new(buf);
    let n = r.count(MIN_MESSAGE_SIZE)?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(r.message()?);
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<MessageRef<'static>> {
        vec![
            MessageRef {
                value: b"{}",
                ..Default::default()
            },
            MessageRef {
                key: Some(b"k"),
                value: b"hello",
                headers: vec![("h1", b"v1"), ("h2", b"")],
                timestamp_ms: Some(-5),
                origin: Some("stdin:3"),
                output: Some("alerts"),
            },
            MessageRef {
                key: Some(b""),
                value: b"",
                ..Default::default()
            },
        ]
    }

    #[test]
    fn batch_round_trips() {
        let msgs = sample();
        let buf = encode_batch(&msgs);
        assert_eq!(decode_batch(&buf).unwrap(), msgs);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = encode_batch(&sample());
        for len in 0..buf.len() {
            assert!(
                decode_batch(&buf[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_flags_are_refused() {
        let mut buf = encode_batch(&sample());
        buf.push(0);
        assert_eq!(
            decode_batch(&buf).unwrap_err().what,
            "trailing bytes after the last item"
        );
        let mut buf = encode_batch(&sample()[..1]);
        buf[4] = 0x80;
        assert_eq!(
            decode_batch(&buf).unwrap_err().what,
            "unknown message flags"
        );
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let buf = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode_batch(&buf).unwrap_err().what,
            "count exceeds the buffer"
        );
    }

    #[test]
    fn outcomes_round_trip() {
        let mut buf = Vec::new();
        let at = begin_count(&mut buf);
        let ok = begin_ok(&mut buf);
        put_message_ref(&mut buf, &sample()[1]);
        patch_count(&mut buf, ok, 1);
        put_err(&mut buf, "bad record");
        patch_count(&mut buf, at, 2);

        let mut r = Reader::new(&buf);
        assert_eq!(r.count(MIN_OUTCOME_SIZE).unwrap(), 2);
        assert_eq!(r.outcome().unwrap(), Ok(1));
        assert_eq!(r.message().unwrap(), sample()[1]);
        assert_eq!(r.outcome().unwrap(), Err("bad record"));
        r.finish().unwrap();
    }
}
