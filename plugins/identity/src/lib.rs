//! The smallest transform: every message passes through unchanged. Benches use it to measure
//! what a plugin call costs (encode, call, decode) with nothing else in the way.

use sluice_sdk::{Error, Message};

pub fn process(msg: Message<'_>) -> Result<Message<'_>, Error> {
    Ok(msg)
}

sluice_sdk::transform!(process: process);
