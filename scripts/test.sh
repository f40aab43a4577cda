#!/usr/bin/env bash
# The whole test suite, on a fresh machine or an old one: installs what it needs, builds the
# plugins both ways, then runs every test of the workspace against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-plugins.sh
# Headless Chromium and Playwright for the console's browser test.
bash scripts/browser-tools.sh install
# The test servers on loopback, stopped again when the tests end: the Kafka-protocol broker on
# 127.0.0.1:9092 and the S3 server on 127.0.0.1:9000 (with pyarrow beside it).
trap 'bash scripts/kafka.sh stop; bash scripts/s3.sh stop' EXIT
bash scripts/kafka.sh start
bash scripts/s3.sh start
export SLUICE_TEST_KAFKA=127.0.0.1:9092 SLUICE_TEST_S3=127.0.0.1:9000
# Release: the tests drive the real runtime binary (a debug Cranelift compiles plugins slowly),
# and the benches share these artifacts.
cargo test --workspace --release
