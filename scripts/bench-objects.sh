#!/usr/bin/env bash
# End-to-end object storage benchmark on the test servers (SeaweedFS S3 and tansu Kafka):
#   bucket -> producer -> Kafka     N mock sessions in Parquet objects (10 000 rows each) read,
#                                   keyed by the producer plugin and produced to 8 partitions
#   Kafka -> enrich -> Parquet      the same N records consumed, enriched and rolled into
#                                   Parquet objects (100 000 rows each)
# Each figure runs from the first record read to the last object or delivery acknowledged and
# the source positions committed (start-up, group joins and closing excluded).
# Usage: scripts/bench-objects.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-500000}
PARTITIONS=8
KPORT=${SLUICE_BENCH_KAFKA_PORT:-19092}
SPORT=${SLUICE_BENCH_S3_PORT:-9500}
B=127.0.0.1:$KPORT
S=http://127.0.0.1:$SPORT
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p producer -p enrich
cargo build --quiet --release -p sluice-runtime

trap 'bash scripts/kafka.sh stop "$KPORT"; bash scripts/s3.sh stop "$SPORT"' EXIT
bash scripts/kafka.sh start "$KPORT"
bash scripts/s3.sh start "$SPORT"
TANSU=$(bash scripts/kafka.sh path)
RUN=bench-$(date +%s)
"$TANSU" topic create --broker "tcp://$B" --partitions "$PARTITIONS" "$RUN-sessions" >/dev/null

R=target/release/runtime
W=target/wasm32-wasip2/release
LOGS=$(mktemp -d)
export SLUICE_CACHE_DIR=$TOOLS/bench-cache AWS_ACCESS_KEY_ID=admin AWS_SECRET_ACCESS_KEY=password
RAW="s3://sluice-test/$RUN/raw?endpoint=$S&format=parquet"
OUT="s3://sluice-test/$RUN/processed?endpoint=$S&format=parquet"

span() { python3 scripts/bench/span.py "$@"; }
# Sum of bytes= over the "object written" lines of a log.
object_bytes() { grep "object written" "$1" | sed -E 's/.*bytes=([0-9]+).*/\1/' | paste -sd+ | bc; }

echo "filling the raw bucket with $N mock sessions"
$R run --plugin $W/mock.wasm --rate 0 --count "$N" --sink "$RAW&roll_records=10000" 2>"$LOGS/fill.log"
raw_bytes=$(object_bytes "$LOGS/fill.log")

echo "bucket -> producer.wasm -> Kafka"
$R run --source "$RAW&follow=false" --plugin $W/producer.wasm --sink "kafka://$B/$RUN-sessions" 2>"$LOGS/producer.log"
producer=$(span "$LOGS/producer.log" "first records read" "every output durable")

echo "Kafka -> enrich.wasm -> Parquet objects"
$R run --source "kafka://$B/$RUN-sessions?group=$RUN-enrich&prop.session.timeout.ms=6000" --plugin $W/enrich.wasm \
  --sink "$OUT&roll_records=100000" --count "$N" 2>"$LOGS/enrich.log"
enrich=$(span "$LOGS/enrich.log" "first records read" "every output durable")
out_bytes=$(object_bytes "$LOGS/enrich.log")
json_bytes=$($R run --plugin $W/mock.wasm --rate 0 --count 10000 2>/dev/null | wc -c)

python3 - "$N" "$producer" "$enrich" "$raw_bytes" "$out_bytes" "$json_bytes" <<'PY'
import sys
n, producer, enrich = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
raw, out, json_per = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]) / 10000
mb = lambda b, s: b / s / 1e6
print(f"\nrecords: {n} (~{json_per:.0f} bytes of JSON each)")
print(f"bucket -> producer -> Kafka:    {n / producer:9.0f} records/s  {mb(raw, producer):6.1f} MB/s of Parquet read  {mb(n * json_per, producer):6.1f} MB/s of JSON records")
print(f"Kafka -> enrich -> Parquet:     {n / enrich:9.0f} records/s  {mb(out, enrich):6.1f} MB/s of Parquet written  {mb(n * json_per, enrich):6.1f} MB/s of JSON records")
PY
echo "logs: $LOGS"
