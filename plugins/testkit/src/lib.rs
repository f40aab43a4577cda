//! A plugin for testing the host. It passes messages through unchanged unless their value (a
//! word, bare or as a JSON string) asks for trouble:
//!
//! - `FAIL` (prefix): a per-record error;
//! - `TRAP`: a panic (a trap that fails the whole batch);
//! - `LOOP`: an endless loop (the batch deadline must stop it);
//! - `OOM`: allocates until the memory cap stops it;
//! - `LOG`: logs the value through the host at info level, then passes it through;
//! - `DROP`: filtered out; `TWICE`: emitted twice; `ROUTE`: sent to the output `elsewhere`;
//! - `OPEN`, `SOCKET`, `ENV`: tries to read /etc/hostname, connect to 127.0.0.1:9, read $HOME;
//!   fails the record with what it got back (a sandboxed plugin gets errors);
//! - `CLOCK`, `RANDOM`: replaced by the seconds since the epoch / 8 random bytes in hex;
//! - `SLEEP` (prefix): sleeps 1 ms, then passes through (a slow release, for shadow runs; the
//!   sleep is real when the plugin is granted the clock).
//!
//! Config `fail_init=REASON` makes `init` fail with that reason; `trap_all=true` makes every
//! record trap (a broken release, for hot-swap rollback tests).

use sluice_sdk::{log, Config, Error, Level, Message};

static TRAP_ALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn process(msg: Message<'_>) -> Result<Vec<Message<'_>>, Error> {
    if TRAP_ALL.load(std::sync::atomic::Ordering::Relaxed) {
        panic!("testkit was told to trap on every record");
    }
    let v: &[u8] = &msg.value;
    let v = v
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v);
    if v.starts_with(b"FAIL") {
        return Err(Error::new(format!(
            "testkit refused {}",
            String::from_utf8_lossy(v)
        )));
    }
    match v {
        b"TRAP" => panic!("testkit was asked to trap"),
        b"LOOP" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        b"OOM" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        b"OPEN" => Err(Error::new(match std::fs::read("/etc/hostname") {
            Ok(_) => "opened /etc/hostname".to_owned(),
            Err(e) => format!("cannot open /etc/hostname: {e}"),
        })),
        b"SOCKET" => Err(Error::new(
            match std::net::TcpStream::connect("127.0.0.1:9") {
                Ok(_) => "connected to 127.0.0.1:9".to_owned(),
                Err(e) => format!("cannot connect to 127.0.0.1:9: {e}"),
            },
        )),
        b"ENV" => Err(Error::new(match std::env::var("HOME") {
            Ok(v) => format!("HOME={v}"),
            Err(e) => format!("cannot read HOME: {e}"),
        })),
        b"CLOCK" => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Ok(vec![msg.with_value(secs.to_string().into_bytes())])
        }
        b"RANDOM" => {
            let mut bytes = [0u8; 8];
            // std's hasher keys come from the WASI random source.
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(1);
            bytes.copy_from_slice(&h.finish().to_le_bytes());
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            Ok(vec![msg.with_value(hex.into_bytes())])
        }
        b"DROP" => Ok(vec![]),
        b"ROUTE" => Ok(vec![msg.to_output("elsewhere")]),
        b"TWICE" => Ok(vec![msg.clone(), msg]),
        _ => {
            if v.starts_with(b"SLEEP") {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if v.starts_with(b"LOG") {
                log(Level::Info, &String::from_utf8_lossy(v));
            }
            Ok(vec![msg])
        }
    }
}

pub fn init(config: &Config) -> Result<(), String> {
    TRAP_ALL.store(
        config.get("trap_all") == Some("true"),
        std::sync::atomic::Ordering::Relaxed,
    );
    match config.get("fail_init") {
        Some(reason) => Err(reason.to_string()),
        None => Ok(()),
    }
}

sluice_sdk::transform!(process: process, init: init);
