#!/usr/bin/env bash
# Sets up (wasm target, plugin build, runtime build) and runs the mock generator on embedded
# defaults: no services, sessions to stdout as JSON lines. Extra arguments go to `runtime run`,
# e.g. `scripts/run-mock.sh --count 10`.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p enrich
cargo build --quiet --release -p sluice-runtime
exec target/release/runtime run --plugin target/wasm32-wasip2/release/mock.wasm "$@"
