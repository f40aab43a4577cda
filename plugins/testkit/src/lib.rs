//! A plugin for testing the host. It passes messages through unchanged unless their value (a
//! word, bare or as a JSON string) asks for trouble:
//!
//! - `FAIL` (prefix): a per-record error;
//! - `TRAP`: a panic (a trap that fails the whole batch);
//! - `LOOP`: an endless loop (the batch deadline must stop it);
//! - `OOM`: allocates until the memory cap stops it;
//! - `LOG`: logs the value through the host at info level, then passes it through;
//! - `DROP`: filtered out; `TWICE`: emitted twice; `ROUTE`: sent to the output `elsewhere`.
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
        b"DROP" => Ok(vec![]),
        b"ROUTE" => Ok(vec![msg.to_output("elsewhere")]),
        b"TWICE" => Ok(vec![msg.clone(), msg]),
        _ => {
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

sluice_sdk::transform!(wit: "../../wit", process: process, init: init);
