#!/usr/bin/env bash
# Bucket ingestion scaled out through object-created events, on this machine's test servers
# (tansu Kafka and SeaweedFS S3 on private ports):
#   listing     one process lists the bucket and reads every object (the listing source)
#   events xN   the list=events lister publishes one event per object; N processes in one
#               consumer group read the objects the events name (N = 1, 2, 3)
# Both read OBJECTS Parquet objects of ROWS mock sessions through producer.wasm into Kafka.
# Rows/s run from the first record read (any process) to the last delivery: for the event-fed
# group, until the processes' /metrics count every row out (the group settled before the lister
# starts; the lister runs alongside and its time is shown). Then the time from an object's event to its first row
# downstream (Kafka timestamps of both records; PROBES objects written a second apart while
# one process and a following lister run).
# Usage: scripts/bench-events.sh [OBJECTS] [ROWS] [PROBES]
set -euo pipefail
cd "$(dirname "$0")/.."

OBJECTS=${1:-1000}
ROWS=${2:-1000}
PROBES=${3:-20}
TOTAL=$((OBJECTS * ROWS))
PARTITIONS=6
KPORT=${SLUICE_BENCH_KAFKA_PORT:-19092}
SPORT=${SLUICE_BENCH_S3_PORT:-9500}
B=127.0.0.1:$KPORT
S=http://127.0.0.1:$SPORT
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p producer
cargo build --quiet --release -p sluice-runtime

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  bash scripts/kafka.sh stop "$KPORT"
  bash scripts/s3.sh stop "$SPORT"
}
trap cleanup EXIT
bash scripts/kafka.sh start "$KPORT" >/dev/null
bash scripts/s3.sh start "$SPORT" >/dev/null
PY=$(bash scripts/s3.sh python)
"$PY" -c 'import confluent_kafka' 2>/dev/null || "$(dirname "$PY")/pip" install --quiet confluent-kafka
TANSU=$(bash scripts/kafka.sh path)
RUN=ev-$(date +%s)
R=target/release/runtime
W=target/wasm32-wasip2/release
LOGS=$(mktemp -d)
export SLUICE_CACHE_DIR=$TOOLS/bench-cache AWS_ACCESS_KEY_ID=admin AWS_SECRET_ACCESS_KEY=password
topic() { "$TANSU" topic create --broker "tcp://$B" --partitions "${2:-$PARTITIONS}" "$1" >/dev/null; }
raw() { echo "s3://sluice-test/$RUN/$1?endpoint=$S&format=parquet$2"; }
now() { date +%s.%N; }
# Sum of sluice_records_out_total over the given metrics addresses.
records_out() {
  local sum=0 n
  for addr in "$@"; do
    n=$(curl -s --max-time 1 "http://$addr/metrics" | awk '/^sluice_records_out_total\{pipeline="main"\}/ {print $2}')
    sum=$((sum + ${n:-0}))
  done
  echo $sum
}
# Partitions each log's last assignment holds, summed.
assigned() {
  local sum=0 n
  for log in "$@"; do
    n=$(grep "partitions assigned" "$log" | tail -1 | sed -n 's/.*partitions=\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | grep -c '[0-9]' || true)
    sum=$((sum + n))
  done
  echo $sum
}

echo "filling the bucket: $OBJECTS objects x $ROWS rows"
$R run --plugin $W/mock.wasm --rate 0 --count "$TOTAL" --batch-size "$ROWS" \
  --sink "$(raw in "&roll_records=$ROWS")" 2>"$LOGS/fill.log"

echo "listing: one process"
topic "$RUN-listing"
$R run --source "$(raw in "&follow=false&group=listing")" --plugin $W/producer.wasm \
  --sink "kafka://$B/$RUN-listing" 2>"$LOGS/listing.log"
listing=$(python3 scripts/bench/span.py "$LOGS/listing.log" "first records read" "every output durable")

results=()
for n in 1 2 3; do
  echo "events: $n process(es)"
  topic "$RUN-events-$n"
  topic "$RUN-rows-$n"
  addrs=() logs=() PIDS=()
  for i in $(seq 1 "$n"); do
    addr=127.0.0.1:$((19500 + 10 * n + i))
    log=$LOGS/events-$n-$i.log
    $R run --source "$(raw in "&events=kafka://$B/$RUN-events-$n&group=g$n&prop.session.timeout.ms=6000")" \
      --plugin $W/producer.wasm --sink "kafka://$B/$RUN-rows-$n" --metrics "$addr" 2>"$log" &
    PIDS+=($!) addrs+=("$addr") logs+=("$log")
  done
  until [ "$(assigned "${logs[@]}")" = "$PARTITIONS" ]; do sleep 0.2; done
  start=$(now)
  $R run --source "$(raw in "&list=events&follow=false&group=lister-$n")" \
    --sink "kafka://$B/$RUN-events-$n" 2>"$LOGS/lister-$n.log"
  listed=$(now)
  until [ "$(records_out "${addrs[@]}")" -ge "$TOTAL" ]; do sleep 0.1; done
  end=$(now)
  per=()
  for addr in "${addrs[@]}"; do per+=("$(records_out "$addr")"); done
  for p in "${PIDS[@]}"; do kill -INT "$p"; done
  for p in "${PIDS[@]}"; do wait "$p" || true; done
  PIDS=()
  first=$(python3 -c 'import datetime, re, sys
ts = [datetime.datetime.fromisoformat(re.match(r"\S+", l).group(0).replace("Z", "+00:00")).timestamp()
      for f in sys.argv[1:] for l in open(f) if "first records read" in l]
print(min(ts))' "${logs[@]}")
  results+=("$n $(python3 -c "print(f'{$end - $first:.3f} {$listed - $start:.3f}')") ${per[*]}")
done

echo "latency: $PROBES objects written a second apart, one process, a following lister"
topic "$RUN-lat-events"
topic "$RUN-lat-rows"
$R run --source "$(raw lat "&events=kafka://$B/$RUN-lat-events&group=lat&prop.session.timeout.ms=6000")" \
  --sink "kafka://$B/$RUN-lat-rows" 2>"$LOGS/lat.log" &
PIDS+=($!)
until [ "$(assigned "$LOGS/lat.log")" = "$PARTITIONS" ]; do sleep 0.2; done
$R run --source "$(raw lat "&list=events&poll=1s&group=lat-lister")" \
  --sink "kafka://$B/$RUN-lat-events" 2>"$LOGS/lat-lister.log" &
PIDS+=($!)
for i in $(seq 1 "$PROBES"); do
  $R run --plugin $W/mock.wasm --set "seed=$i" --rate 0 --count "$ROWS" --batch-size "$ROWS" \
    --sink "$(raw lat "&roll_records=$ROWS")" 2>/dev/null
  sleep 1
done
sleep 3
for p in "${PIDS[@]}"; do kill -INT "$p"; done
for p in "${PIDS[@]}"; do wait "$p" || true; done
PIDS=()

"$PY" - "$B" "$RUN" "$PROBES" "$TOTAL" "$OBJECTS" "$listing" "${results[@]}" <<'PY'
import statistics, sys, time
from confluent_kafka import Consumer, TopicPartition
broker, run, probes, total, objects, listing = sys.argv[1:7]
total, objects, probes = int(total), int(objects), int(probes)

def read(topic):
    c = Consumer({"bootstrap.servers": broker, "group.id": f"read-{time.time()}", "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out, idle = [], 0
    while idle < 20:
        m = c.poll(0.1)
        if m is None or m.error():
            idle += 1
            continue
        idle = 0
        out.append((m.key().decode(), m.timestamp()[1]))
    c.close()
    return out

events = {k.split("/", 1)[1]: ts for k, ts in read(f"{run}-lat-events")}
first = {}
for k, ts in read(f"{run}-lat-rows"):
    first[k] = min(first.get(k, ts), ts)
lat = sorted(first[k] - events[k] for k in events if k in first)
pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"\n{objects} objects, {total} rows, bucket -> producer.wasm -> Kafka, 2 cores")
base = total / float(listing)
print(f"listing source, 1 process: {base:9.0f} rows/s {objects / float(listing):7.0f} objects/s")
for r in sys.argv[7:]:
    n, span, listed, *per = r.split()
    rate = total / float(span)
    print(f"events, {n} process(es):   {rate:9.0f} rows/s {objects / float(span):7.0f} objects/s"
          f"  ({rate / base:.2f}x listing; lister {float(listed):.2f} s; rows per process {'/'.join(per)})")
print(f"event -> first row downstream ({len(lat)} of {probes} objects): p50 {pct(0.5)} ms, p99 {pct(0.99)} ms")
PY
