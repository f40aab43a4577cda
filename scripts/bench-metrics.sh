#!/usr/bin/env bash
# What /metrics costs: N mock sessions -> enrich -> stdout (in process, as fast as possible),
# without --metrics and with --metrics scraped every 100 ms (Prometheus usually scrapes every
# 15 s), alternating, 3 runs each; prints the median records/s of each and their ratio. The
# counters themselves are always kept (a few atomic adds per batch).
# Usage: scripts/bench-metrics.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p enrich
cargo build --quiet --release -p sluice-runtime
T=${CARGO_TARGET_DIR:-$PWD/target}
R=$T/release/runtime
W=$T/wasm32-wasip2/release
PORT=${SLUICE_BENCH_METRICS_PORT:-19464}

run() {
  local s e
  s=$(date +%s.%N)
  $R run --log warn --plugin "$W/mock.wasm" --plugin "$W/enrich.wasm" --rate 0 --count "$N" "$@" >/dev/null
  e=$(date +%s.%N)
  awk "BEGIN { printf \"%.0f\n\", $N / ($e - $s) }"
}
scraped() {
  (while sleep 0.1; do curl -s "127.0.0.1:$PORT/metrics" >/dev/null || true; done) &
  local scraper=$!
  run --metrics "127.0.0.1:$PORT"
  kill "$scraper"
}
plain=() metrics=()
for _ in 1 2 3; do
  plain+=("$(run)")
  metrics+=("$(scraped)")
done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
p=$(median "${plain[@]}") m=$(median "${metrics[@]}")
echo "without --metrics: ${plain[*]} records/s (median $p)"
echo "with --metrics, scraped every 100 ms: ${metrics[*]} records/s (median $m)"
awk "BEGIN { printf \"ratio: %.3f\n\", $m / $p }"
