#!/usr/bin/env bash
# Stateful plugins on this machine. (1) Kafka -> enrich -> Iceberg against Kafka -> enrich ->
# rollup -> Iceberg (a checkpoint, hence a commit, every 10 s), same broker (fresh for each,
# holding the same N mock sessions on 4 partitions), same catalog: records/s from the first
# record read to the last commit, medians of RUNS. (2) Checkpoint time and size with K keys in
# one lane (statekit on stdin). (3) Recovery after kill -9: from the restart to the first commit
# of a Kafka -> rollup -> Iceberg run. Usage: scripts/bench-rollup.sh [N] [RUNS] [K]
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
RUNS=${2:-3}
K=${3:-100000}
PORT=${SLUICE_BENCH_KAFKA_PORT:-19092}
B=127.0.0.1:$PORT
CATALOG=127.0.0.1:9181
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p enrich -p rollup -p statekit
cargo build --quiet --release -p sluice-runtime
bash scripts/s3.sh start >/dev/null

trap 'bash scripts/kafka.sh stop "$PORT"' EXIT
TANSU=$(bash scripts/kafka.sh path)
R=target/release/runtime
W=target/wasm32-wasip2/release
LOGS=$(mktemp -d)
RUN=$(date +%s)
export SLUICE_CACHE_DIR=$TOOLS/bench-cache AWS_ACCESS_KEY_ID=admin AWS_SECRET_ACCESS_KEY=password
SCHEMA=$LOGS/rollup.jsonl
echo '{"window_start":"x","window_end":"x","country":"x","status":"x","sessions":1}' >"$SCHEMA"

fresh() {
  bash scripts/kafka.sh stop "$PORT"
  bash scripts/kafka.sh start "$PORT" >/dev/null
  "$TANSU" topic create --broker "tcp://$B" --partitions 4 in >/dev/null
  $R run --plugin $W/mock.wasm --rate 0 --count "$N" --sink "kafka://$B/in" 2>"$LOGS/fill.log"
}
table() { echo "iceberg://$CATALOG/bench/$1?warehouse=warehouse&credential=admin:password$2"; }
source_uri() { echo "kafka://$B/in?group=$1&prop.session.timeout.ms=6000"; }
span() { python3 scripts/bench/span.py "$1" "first records read" "every output durable"; }

enrich_rates=() rollup_rates=()
for i in $(seq "$RUNS"); do
  echo "run $i: Kafka -> enrich -> Iceberg"
  fresh
  $R run --source "$(source_uri e$i)" --plugin $W/enrich.wasm \
    --sink "$(table "enrich_${RUN}_$i" "&partition=day(timestamp)")" --count "$N" 2>"$LOGS/enrich$i.log"
  enrich_rates+=("$(python3 -c "print($N / $(span "$LOGS/enrich$i.log"))")")
  echo "run $i: Kafka -> enrich -> rollup -> Iceberg"
  fresh
  $R run --source "$(source_uri r$i)" --plugin $W/enrich.wasm --plugin $W/rollup.wasm \
    --sink "$(table "rollup_${RUN}_$i" "&schema=$SCHEMA")" --count "$N" 2>"$LOGS/rollup$i.log"
  rollup_rates+=("$(python3 -c "print($N / $(span "$LOGS/rollup$i.log"))")")
done

echo "checkpoints: $K keys in one lane"
CK=$LOGS/checkpoints
python3 -c "
import json
for i in range($K): print(json.dumps({'put': f'key-{i:08d}', 'bytes': 16}))
" >"$LOGS/keys.jsonl"
SLUICE_LOG=info,sluice::pipeline::checkpoint=debug $R run --plugin $W/statekit.wasm \
  --checkpoints "file://$CK" <"$LOGS/keys.jsonl" >/dev/null 2>"$LOGS/keys.log"
checkpoint_line=$(grep "checkpoint stored" "$LOGS/keys.log" | tail -1)
snapshot_bytes=$(find "$CK" -name '*.state' -printf '%s\n' | sort -n | tail -1)

echo "recovery: kill -9 mid-stream, restart, time to the first commit"
fresh
$R run --source "$(source_uri k)" --plugin $W/enrich.wasm --plugin $W/rollup.wasm --rate 100000 \
  --sink "$(table "recover_$RUN" "&schema=$SCHEMA")" --checkpoint-every 1s 2>"$LOGS/k1.log" &
pid=$!
until grep -q " committed " "$LOGS/k1.log"; do sleep 0.2; done
sleep 2
kill -9 $pid; wait $pid 2>/dev/null || true
restarted=$(date +%s.%N)
$R run --source "$(source_uri k)" --plugin $W/enrich.wasm --plugin $W/rollup.wasm \
  --sink "$(table "recover_$RUN" "&schema=$SCHEMA")" --checkpoint-every 1s 2>"$LOGS/k2.log" &
pid=$!
until grep -q " committed " "$LOGS/k2.log"; do sleep 0.05; done
recovered=$(date +%s.%N)
kill -INT $pid; wait $pid || true

python3 - "$N" "$K" "${enrich_rates[*]}" "${rollup_rates[*]}" "$checkpoint_line" "$snapshot_bytes" "$restarted" "$recovered" <<'PY'
import re, statistics, sys
n, k, enrich, rollup, line, size, t0, t1 = sys.argv[1:9]
e = statistics.median(float(x) for x in enrich.split())
r = statistics.median(float(x) for x in rollup.split())
print(f"\nrecords: {n}, medians of {len(enrich.split())} runs")
print(f"Kafka -> enrich -> Iceberg:           {e:9.0f} records/s   ({', '.join(f'{float(x):.0f}' for x in enrich.split())})")
print(f"Kafka -> enrich -> rollup -> Iceberg: {r:9.0f} records/s   ({', '.join(f'{float(x):.0f}' for x in rollup.split())})   rollup/enrich = {r / e:.2f}")
took = re.search(r"took_ms=(\d+)", line)
paused = re.search(r"paused_ms=(\d+)", line)
print(f"checkpoint of {k} keys: {int(size) / 2**20:.1f} MiB snapshot, {took.group(1) if took else '?'} ms to store (workers paused {paused.group(1) if paused else '?'} ms)")
print(f"recovery after kill -9: first commit {float(t1) - float(t0):.1f} s after the restart (process start, plugin load, group join ~3 s on tansu, one checkpoint)")
PY
