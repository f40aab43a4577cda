#!/usr/bin/env bash
# The enrich rule in Rust, Python and JavaScript, side by side: component size, cold start
# (compile + instantiate + init + one record, empty artifact cache), warm start (cached
# artifact, median of 5) and throughput (N mock sessions stdin -> enrich -> stdout, 1 worker).
# Usage: scripts/bench-langs.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-100000}
bash scripts/build-plugins.sh >/dev/null 2>&1
cargo build --quiet --release -p sluice-runtime
T=${CARGO_TARGET_DIR:-$PWD/target}
R=$T/release/runtime
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

$R run --log warn --plugin "$T/wasm32-wasip2/release/mock.wasm" --set seed=1 --rate 0 \
  --count "$N" >"$DIR/sessions.jsonl"
head -1 "$DIR/sessions.jsonl" >"$DIR/one.jsonl"
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk "BEGIN { print $e - $s }"; }

printf '%-8s %12s %10s %10s %14s\n' plugin bytes cold_s warm_s records_per_s
for p in "rust:$T/wasm32-wasip2/release/enrich.wasm" "python:$T/guest/enrich-py.wasm" \
  "javascript:$T/guest/enrich-js.wasm"; do
  name=${p%%:*} wasm=${p#*:}
  cache=$DIR/cache-$name
  cold=$(seconds env SLUICE_CACHE_DIR="$cache" $R run --plugin "$wasm" <"$DIR/one.jsonl")
  warm=$(for _ in 1 2 3 4 5; do
    seconds sh -c "SLUICE_CACHE_DIR='$cache' $R run --plugin '$wasm' <'$DIR/one.jsonl'"
  done | sort -n | sed -n 3p)
  run=$(seconds sh -c "SLUICE_CACHE_DIR='$cache' $R run --workers 1 --plugin '$wasm' <'$DIR/sessions.jsonl'")
  printf '%-8s %12d %10.3f %10.3f %14.0f\n' "$name" "$(stat -c %s "$wasm")" "$cold" "$warm" \
    "$(awk "BEGIN { print $N / $run }")"
done
