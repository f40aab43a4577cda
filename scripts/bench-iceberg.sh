#!/usr/bin/env bash
# Kafka -> enrich -> Iceberg on this machine: the runtime against the Python consumer it
# replaces (confluent-kafka poll -> enrich -> pyarrow -> pyiceberg append every 100 000 records),
# same broker (fresh for each, holding the same N mock sessions on 4 partitions), same catalog
# (SeaweedFS's Iceberg REST catalog, scripts/s3.sh). Reports records/s (first record read to
# the last commit), the runtime's commit latency p50/p99, the data files it wrote and their mean
# size, and end-to-end freshness at the default commit interval (a probe session a second,
# timed until pyiceberg sees it). Usage: scripts/bench-iceberg.sh [N] [PROBES]
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
PROBES=${2:-20}
PORT=${SLUICE_BENCH_KAFKA_PORT:-19092}
B=127.0.0.1:$PORT
CATALOG=127.0.0.1:9181
S3=127.0.0.1:9000
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p enrich
cargo build --quiet --release -p sluice-runtime
bash scripts/s3.sh start >/dev/null
PY=$(bash scripts/s3.sh python)
"$PY" -c 'import confluent_kafka' 2>/dev/null || "$(dirname "$PY")/pip" install --quiet confluent-kafka

trap 'bash scripts/kafka.sh stop "$PORT"' EXIT
TANSU=$(bash scripts/kafka.sh path)
R=target/release/runtime
W=target/wasm32-wasip2/release
LOGS=$(mktemp -d)
RUN=$(date +%s)
export SLUICE_CACHE_DIR=$TOOLS/bench-cache AWS_ACCESS_KEY_ID=admin AWS_SECRET_ACCESS_KEY=password

fresh() {
  bash scripts/kafka.sh stop "$PORT"
  bash scripts/kafka.sh start "$PORT" >/dev/null
  "$TANSU" topic create --broker "tcp://$B" --partitions 4 in >/dev/null
  [ "${1:-}" = empty ] || $R run --plugin $W/mock.wasm --rate 0 --count "$N" --sink "kafka://$B/in" 2>"$LOGS/fill.log"
}
table() { echo "iceberg://$CATALOG/bench/$1?warehouse=warehouse&credential=admin:password&partition=day(timestamp)"; }

echo "runtime: Kafka -> enrich.wasm -> Iceberg (default commit 10s)"
fresh
$R run --source "kafka://$B/in?group=runtime&prop.session.timeout.ms=6000" --plugin $W/enrich.wasm \
  --sink "$(table "sluice_$RUN")" --count "$N" 2>"$LOGS/runtime.log"
runtime_span=$(python3 scripts/bench/span.py "$LOGS/runtime.log" "first records read" "every output durable")

echo "python: confluent-kafka -> enrich -> pyiceberg append every 100 000"
fresh
python_line=$(cd scripts/bench && "$PY" python_iceberg.py "$B" in python "$N" "$CATALOG" "$S3" "bench.python_$RUN")

echo "freshness: $PROBES probes, one a second, into a running runtime"
fresh empty
$R run --source "kafka://$B/in?group=fresh&prop.session.timeout.ms=6000" --plugin $W/enrich.wasm \
  --sink "$(table "fresh_$RUN")" 2>"$LOGS/fresh.log" &
pid=$!
fresh_line=$(cd scripts/bench && "$PY" iceberg_freshness.py "$B" in "$CATALOG" "$S3" "bench.fresh_$RUN" "$PROBES" 2>/dev/null)
kill -INT $pid; wait $pid || true

"$PY" - "$N" "$runtime_span" "$python_line" "$fresh_line" "$LOGS/runtime.log" "$CATALOG" "$S3" "bench.sluice_$RUN" <<'PY'
import re, statistics, sys
from pyiceberg.catalog.rest import RestCatalog
n, span, python_line, fresh_line, log, catalog, s3, table = sys.argv[1:9]
rt = int(n) / float(span)
python = float(re.search(r"= (\d+) records/s", python_line).group(1))
commits = sorted(int(m) for m in re.findall(r"commit_ms=(\d+)", open(log).read()))
p = lambda q: commits[min(len(commits) - 1, int(q * len(commits)))]
c = RestCatalog("b", uri=f"http://{catalog}", warehouse="warehouse", credential="admin:password",
                **{"s3.endpoint": f"http://{s3}", "s3.access-key-id": "admin", "s3.secret-access-key": "password",
                   "s3.region": "us-east-1", "s3.path-style-access": "true"})
t = c.load_table(table)
files = [task.file for task in t.scan().plan_files()]
partitions = {str(f.partition) for f in files}
print(f"\nrecords: {n}")
print(f"runtime (Kafka -> enrich -> Iceberg):    {rt:8.0f} records/s")
print(f"python (confluent-kafka -> pyiceberg):   {python:8.0f} records/s   runtime/python = {rt / python:.1f}")
print(f"runtime commits: {len(commits)}, latency p50 {p(0.5)} ms, p99 {p(0.99)} ms")
print(f"data files after {n} records: {len(files)} in {len(partitions)} partitions, mean {statistics.mean(f.file_size_in_bytes for f in files) / 2**20:.1f} MiB, snapshots {len(t.snapshots())}")
print(fresh_line)
PY
