#!/usr/bin/env bash
# End-to-end Kafka benchmark on the test broker: N mock sessions (default 1 M) on an
# 8-partition topic, then, same broker, same run:
#   runtime     Kafka -> enrich.wasm -> Kafka
#   raw copy    Rust rdkafka topic-to-topic copy, the runtime's client settings, no plugin
#   native      the same copy loop doing the enrich rule natively, compiled in (no plugin, no
#               batching, no at-least-once bookkeeping): the floor for any implementation
#   python      confluent-kafka consume -> enrich -> produce loop
# Each figure runs from the first record read to the last delivery acknowledged (group joins
# excluded). Usage: scripts/bench-kafka.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
PARTITIONS=8
PORT=${SLUICE_BENCH_KAFKA_PORT:-19092}
B=127.0.0.1:$PORT
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}
VENV=$TOOLS/bench-venv

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p enrich
cargo build --quiet --release -p sluice-runtime -p sluice-benches --bin kafka_copy
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null || "$VENV/bin/pip" install --quiet confluent-kafka

bash scripts/kafka.sh start "$PORT"
trap 'bash scripts/kafka.sh stop "$PORT"' EXIT
TANSU=$(bash scripts/kafka.sh path)
RUN=bench-$(date +%s)
for t in in out-runtime out-copy out-native out-python; do
  "$TANSU" topic create --broker "tcp://$B" --partitions "$PARTITIONS" "$RUN-$t" >/dev/null
done

R=target/release/runtime
W=target/wasm32-wasip2/release
LOGS=$(mktemp -d)
export SLUICE_CACHE_DIR=$TOOLS/bench-cache

span() { python3 scripts/bench/span.py "$@"; }

echo "filling $RUN-in with $N mock sessions ($PARTITIONS partitions)"
$R run --plugin $W/mock.wasm --rate 0 --count "$N" --sink "kafka://$B/$RUN-in" 2>"$LOGS/fill.log"
fill=$(span "$LOGS/fill.log" "producing" "done")

echo "runtime: Kafka -> enrich.wasm -> Kafka"
$R run --source "kafka://$B/$RUN-in?group=$RUN-runtime&prop.session.timeout.ms=6000" --plugin $W/enrich.wasm \
  --sink "kafka://$B/$RUN-out-runtime" --count "$N" 2>"$LOGS/runtime.log"
runtime=$(span "$LOGS/runtime.log" "partitions assigned" "done")

echo "raw copy (Rust, same client settings, no plugin)"
copy_line=$(target/release/kafka_copy "$B" "$RUN-in" "$RUN-out-copy" "$RUN-copy" "$N")
echo "native enrich (Rust, same loop, the rule compiled in)"
native_line=$(target/release/kafka_copy --enrich "$B" "$RUN-in" "$RUN-out-native" "$RUN-native" "$N")
echo "python loop (confluent-kafka)"
python_line=$("$VENV/bin/python" scripts/bench/python_enrich.py "$B" "$RUN-in" "$RUN-out-python" "$RUN-python" "$N")

python3 - "$N" "$fill" "$runtime" "$copy_line" "$native_line" "$python_line" <<'PY'
import re, sys
n, fill, runtime = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
rate = lambda line: float(re.search(r"= (\d+) records/s", line).group(1))
copy, native, python = rate(sys.argv[4]), rate(sys.argv[5]), rate(sys.argv[6])
rt = n / runtime
print(f"\nrecords: {n}")
print(f"fill (mock.wasm -> Kafka):        {n / fill:10.0f} records/s")
print(f"runtime (Kafka -> enrich -> Kafka): {rt:8.0f} records/s")
print(f"raw copy (Rust, no plugin):       {copy:10.0f} records/s   runtime/raw = {rt / copy:.2f}")
print(f"native enrich (Rust, compiled in): {native:9.0f} records/s   runtime/native = {rt / native:.2f}, native/raw = {native / copy:.2f}")
print(f"python loop (confluent-kafka):    {python:10.0f} records/s   runtime/python = {rt / python:.2f}")
PY
