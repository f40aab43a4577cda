#!/usr/bin/env bash
# The embedded default's hot path: N mock sessions, stdin -> enrich -> stdout, with the rule in
# Rust (enrich.wasm), Python (enrich-py, componentize-py) and JavaScript (enrich-js,
# componentize-js), against the same rule as a plain CPython script over the same lines, in
# interleaved rounds (medians; compile caches warm). BASE=DIR adds another build as contenders
# (DIR/runtime with DIR/enrich.wasm, DIR/enrich-py.wasm and DIR/enrich-js.wasm where present,
# e.g. copied from a checkout of an older commit): before/after in the same run.
# Usage: scripts/bench-stdio.sh [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
N=${1:-500000}
ROUNDS=${2:-3}
bash scripts/build-plugins.sh >/dev/null 2>&1
cargo build --quiet --release -p sluice-runtime
T=${CARGO_TARGET_DIR:-$PWD/target}
R=$T/release/runtime
ENRICH=$T/wasm32-wasip2/release/enrich.wasm
GUEST=$T/guest
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

$R run --log warn --plugin "$T/wasm32-wasip2/release/mock.wasm" --set seed=1 --rate 0 \
  --count "$N" >"$DIR/sessions.jsonl"

# Prints "wall_s cpu_s" of a command whose stdin is the sessions and whose stdout is discarded.
timed() {
  /usr/bin/time -f '%e %U %S' -o "$DIR/time" "$@" <"$DIR/sessions.jsonl" >/dev/null
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$DIR/time"
}

contenders=("rust:$R run --log warn --plugin $ENRICH"
  "python:$R run --log warn --plugin $GUEST/enrich-py.wasm"
  "js:$R run --log warn --plugin $GUEST/enrich-js.wasm")
if [ -n "${BASE:-}" ]; then
  for p in rust:enrich python:enrich-py js:enrich-js; do
    [ -f "$BASE/${p#*:}.wasm" ] && contenders+=("${p%%:*}-base:$BASE/runtime run --log warn --plugin $BASE/${p#*:}.wasm")
  done
fi
contenders+=("cpython:python3 scripts/bench/enrich_lines.py")
# Warm the compile caches so every contender is timed running, not compiling.
for c in "${contenders[@]}"; do
  # shellcheck disable=SC2086
  head -1 "$DIR/sessions.jsonl" | ${c#*:} >/dev/null
done

for round in $(seq "$ROUNDS"); do
  for c in "${contenders[@]}"; do
    name=${c%%:*}
    # shellcheck disable=SC2086
    echo "$name $(timed ${c#*:})" >>"$DIR/results"
  done
done

median() { grep "^$1 " "$DIR/results" | awk '{ print $'"$2"' }' | sort -n | sed -n "$(((ROUNDS + 1) / 2))p"; }
py=$(median cpython 2)
printf '%-12s %8s %8s %12s %10s\n' contender wall_s cpu_s records_per_s vs_cpython
for c in "${contenders[@]}"; do
  name=${c%%:*}
  wall=$(median "$name" 2) cpu=$(median "$name" 3)
  printf '%-12s %8.3f %8.3f %12.0f %9.2fx\n' "$name" "$wall" "$cpu" "$(awk "BEGIN { print $N / $wall }")" \
    "$(awk "BEGIN { print $py / $wall }")"
done
echo "rounds (name wall_s cpu_s):"
cat "$DIR/results"
