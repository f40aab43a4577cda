#!/usr/bin/env bash
# The whole test suite, on a fresh machine or an old one: installs what it needs, builds the
# plugins both ways, then runs every test of the workspace against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-plugins.sh
# The Kafka-protocol test broker on 127.0.0.1:9092, stopped again when the tests end.
bash scripts/kafka.sh start
trap 'bash scripts/kafka.sh stop' EXIT
export SLUICE_TEST_KAFKA=127.0.0.1:9092
# Release: the tests drive the real runtime binary (a debug Cranelift compiles plugins slowly),
# and the benches share these artifacts.
cargo test --workspace --release
