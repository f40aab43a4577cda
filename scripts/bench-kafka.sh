#!/usr/bin/env bash
# End-to-end Kafka benchmark on the test broker: N mock sessions (default 1 M) on an
# 8-partition topic, through each of:
#   runtime     Kafka -> enrich.wasm -> Kafka
#   raw copy    Rust rdkafka topic-to-topic copy, the runtime's client settings, no plugin
#   native      the same copy loop doing the enrich rule natively, compiled in (no plugin, no
#               batching, no at-least-once bookkeeping): the floor for any implementation
#   python      confluent-kafka consume -> enrich -> produce loop
# Each figure runs from the first record read to the last delivery acknowledged, and for the
# runtime its offsets committed too (group joins and leaving the group excluded, as for all). Every contender gets a fresh broker holding the same N records: tansu keeps topics
# in memory and slows down as they grow, so a shared broker favours whoever runs first. The Rust
# contenders run ROUNDS times, interleaved, and the medians are compared (one run on a shared
# 2-core machine swings by +-10%). Usage: scripts/bench-kafka.sh [N] [ROUNDS]
# BASE=DIR adds another build as a contender in the same rounds (DIR/runtime and DIR/enrich.wasm,
# e.g. copied from a checkout of an older commit): before/after on the same machine and broker.
# PLUGIN=FILE runs the runtime (and the base build, with DIR/FILE's name) with another build of
# the rule, e.g. PLUGIN=target/guest/enrich-py.wasm for the Python plugin against the Python loop.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
ROUNDS=${2:-1}
PARTITIONS=8
PORT=${SLUICE_BENCH_KAFKA_PORT:-19092}
B=127.0.0.1:$PORT
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}
VENV=$TOOLS/bench-venv

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p enrich
cargo build --quiet --release -p sluice-runtime
cargo build --quiet --release -p sluice-benches --bin kafka_copy
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null || "$VENV/bin/pip" install --quiet confluent-kafka

trap 'bash scripts/kafka.sh stop "$PORT"' EXIT
TANSU=$(bash scripts/kafka.sh path)
R=target/release/runtime
W=target/wasm32-wasip2/release
PLUGIN=${PLUGIN:-$W/enrich.wasm}
LOGS=$(mktemp -d)
export SLUICE_CACHE_DIR=$TOOLS/bench-cache

span() { python3 scripts/bench/span.py "$@"; }

# A fresh broker with topics in and out, and N mock sessions in `in`; sets $fill (seconds).
fresh() {
  bash scripts/kafka.sh stop "$PORT"
  bash scripts/kafka.sh start "$PORT" >/dev/null
  for t in in out; do
    "$TANSU" topic create --broker "tcp://$B" --partitions "$PARTITIONS" "$t" >/dev/null
  done
  $R run --plugin $W/mock.wasm --rate 0 --count "$N" --sink "kafka://$B/in" 2>"$LOGS/fill.log"
  fill=$(span "$LOGS/fill.log" "producing" "done")
}

runtime_spans=() base_spans=() copy_lines=() native_lines=()
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS: runtime (Kafka -> $(basename "$PLUGIN") -> Kafka)"
  fresh
  $R run --source "kafka://$B/in?group=runtime&prop.session.timeout.ms=6000" --plugin "$PLUGIN" \
    --sink "kafka://$B/out" --count "$N" 2>"$LOGS/runtime-$r.log"
  runtime_spans+=("$(span "$LOGS/runtime-$r.log" "first records read" "every output durable")")
  if [ -n "${BASE:-}" ]; then
    echo "round $r/$ROUNDS: base build ($BASE)"
    fresh
    "$BASE/runtime" run --source "kafka://$B/in?group=base&prop.session.timeout.ms=6000" \
      --plugin "$BASE/$(basename "$PLUGIN")" --sink "kafka://$B/out" --count "$N" 2>"$LOGS/base-$r.log"
    base_spans+=("$(span "$LOGS/base-$r.log" "first records read" "every output durable")")
  fi
  echo "round $r/$ROUNDS: raw copy (Rust, same client settings, no plugin)"
  fresh
  copy_lines+=("$(target/release/kafka_copy "$B" in out copy "$N")")
  echo "round $r/$ROUNDS: native enrich (Rust, same loop, the rule compiled in)"
  fresh
  native_lines+=("$(target/release/kafka_copy --enrich "$B" in out native "$N")")
done
echo "python loop (confluent-kafka)"
fresh
python_line=$("$VENV/bin/python" scripts/bench/python_enrich.py "$B" in out python "$N")

python3 - "$N" "$fill" "$python_line" "${runtime_spans[*]}" "$(printf '%s|' "${copy_lines[@]}")" "$(printf '%s|' "${native_lines[@]}")" "${base_spans[*]}" <<'PY'
import re, statistics, sys
n, fill, python_line = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rate = lambda line: float(re.search(r"= (\d+) records/s", line).group(1))
runtimes = [n / float(s) for s in sys.argv[4].split()]
copies = [rate(l) for l in sys.argv[5].split("|") if l]
natives = [rate(l) for l in sys.argv[6].split("|") if l]
python = rate(python_line)
rt, copy, native = (statistics.median(v) for v in (runtimes, copies, natives))
each = lambda v: "" if len(v) == 1 else "   (" + ", ".join(f"{x:.0f}" for x in v) + ")"
print(f"\nrecords: {n}, rounds: {len(runtimes)} (medians)")
print(f"fill (mock.wasm -> Kafka):        {n / fill:10.0f} records/s")
print(f"runtime (Kafka -> enrich -> Kafka): {rt:8.0f} records/s{each(runtimes)}")
print(f"raw copy (Rust, no plugin):       {copy:10.0f} records/s   runtime/raw = {rt / copy:.2f}{each(copies)}")
print(f"native enrich (Rust, compiled in): {native:9.0f} records/s   runtime/native = {rt / native:.2f}, native/raw = {native / copy:.2f}{each(natives)}")
print(f"python loop (confluent-kafka):    {python:10.0f} records/s   runtime/python = {rt / python:.2f}")
bases = [n / float(s) for s in sys.argv[7].split()]
if bases:
    base = statistics.median(bases)
    print(f"base build (same job):            {base:10.0f} records/s   runtime/base = {rt / base:.2f}{each(bases)}")
PY
