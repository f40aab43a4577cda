//! A lane's state as bytes, for checkpoints: a versioned binary form (all integers
//! little-endian). Reading never panics on bad input: a corrupt snapshot is an error that names
//! what is wrong.
//!
//! ```text
//! snapshot := "SLST" version:u8=1 stream_time:(0 | 1 i64) fired:u64
//!             entries:u32 (klen:u32 key vlen:u32 value expires:(0 | 1 i64)){entries}
//!             timers:u32 (at:i64 domain:u8 klen:u32 key){timers}
//! ```

use anyhow::{anyhow, bail, Result};

use super::lane::{Domain, Entry, LaneState, Timer};

const MAGIC: &[u8; 4] = b"SLST";
const VERSION: u8 = 1;

pub fn encode(lane: &LaneState) -> Vec<u8> {
    let mut out = Vec::with_capacity(lane.bytes() + 64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    put_opt(&mut out, lane.stream_time);
    out.extend_from_slice(&lane.fired.to_le_bytes());
    out.extend_from_slice(&(lane.entries.len() as u32).to_le_bytes());
    for (key, e) in &lane.entries {
        put_bytes(&mut out, key);
        put_bytes(&mut out, &e.value);
        put_opt(&mut out, e.expires_ms);
    }
    out.extend_from_slice(&(lane.timers.len() as u32).to_le_bytes());
    for t in &lane.timers {
        out.extend_from_slice(&t.at_ms.to_le_bytes());
        out.push(match t.domain {
            Domain::Event => 0,
            Domain::Processing => 1,
        });
        put_bytes(&mut out, &t.key);
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<LaneState> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != MAGIC {
        bail!("not a Sluice state snapshot");
    }
    let version = r.u8()?;
    if version != VERSION {
        bail!("state snapshot version {version}: this runtime reads version {VERSION}");
    }
    let mut lane = LaneState::default();
    lane.stream_time = r.opt()?;
    lane.fired = r.u64()?;
    for _ in 0..r.u32()? {
        let key = r.bytes()?.to_vec();
        let value = r.bytes()?.to_vec();
        let expires_ms = r.opt()?;
        lane.entries.insert(key, Entry { value, expires_ms });
    }
    for _ in 0..r.u32()? {
        let at_ms = r.i64()?;
        let domain = match r.u8()? {
            0 => Domain::Event,
            1 => Domain::Processing,
            d => bail!(
                "state snapshot: unknown timer domain {d} at byte {}",
                r.at - 1
            ),
        };
        let key = r.bytes()?.to_vec();
        lane.timers.insert(Timer { at_ms, domain, key });
    }
    if r.at != bytes.len() {
        bail!("state snapshot: {} bytes after the end", bytes.len() - r.at);
    }
    lane.recount();
    Ok(lane)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| anyhow!("state snapshot cut short at byte {}", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }

    fn opt(&mut self) -> Result<Option<i64>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.i64()?)),
            f => bail!("state snapshot: bad flag {f} at byte {}", self.at - 1),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_round_trips_and_corruption_is_an_error() {
        let mut lane = LaneState::default();
        lane.put_many(
            vec![
                (b"a".to_vec(), b"1".to_vec(), None),
                (b"b".to_vec(), vec![0, 255], Some(1_700_000_000_000)),
            ],
            usize::MAX,
        )
        .unwrap();
        lane.observe(42);
        lane.register(Timer {
            at_ms: 60_000,
            domain: Domain::Processing,
            key: b"w".to_vec(),
        });
        let bytes = encode(&lane);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.entries, lane.entries);
        assert_eq!(back.timers, lane.timers);
        assert_eq!((back.stream_time, back.fired), (Some(42), 0));
        assert_eq!(back.bytes(), lane.bytes());
        assert!(!back.is_dirty());
        for cut in [0, 3, 5, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra)
            .unwrap_err()
            .to_string()
            .contains("after the end"));
        let mut future = bytes;
        future[4] = 9;
        assert!(decode(&future)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
    }
}
