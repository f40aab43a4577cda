#!/usr/bin/env bash
# Sets up (wasm target, plugin builds, runtime build) and runs the whole stack of
# examples/stack.toml on embedded defaults: no services; buckets are directories under data/,
# topics are in-process. Ctrl-C stops it cleanly. Extra arguments go to `runtime run`, e.g.
# `--endpoint user_sessions=kafka://127.0.0.1:9092/user_sessions` to use a real broker.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p producer -p enrich -p rollup
cargo build --quiet --release -p sluice-runtime
exec target/release/runtime run --config examples/stack.toml "$@"
