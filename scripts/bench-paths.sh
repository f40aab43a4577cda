#!/usr/bin/env bash
# The stack's main path against its siblings, same machine, same rounds: N mock sessions on a
# PARTITIONS-partition topic through
#   kafka     Kafka -> enrich.wasm -> Kafka
#   iceberg   Kafka -> enrich.wasm -> Iceberg (SeaweedFS's REST catalog, partition=day(timestamp))
#   parquet   Kafka -> enrich.wasm -> Parquet objects (SeaweedFS)
#   native    the Rust copy loop doing the enrich rule compiled in (scripts/bench-kafka.sh's)
# each on a fresh broker holding the same records, from the first record read to every output
# durable (offsets or table positions committed), ROUNDS rounds interleaved; prints the medians,
# the issue's ratios and each runtime's peak resident memory.
# Usage: scripts/bench-paths.sh [N] [ROUNDS]   (PARTITIONS=8 for eight partitions; RUNTIME=FILE
# measures another build of the runtime, e.g. one of an older commit, for before/after)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
ROUNDS=${2:-3}
PARTITIONS=${PARTITIONS:-4}
PORT=${SLUICE_BENCH_KAFKA_PORT:-19092}
B=127.0.0.1:$PORT
CATALOG=127.0.0.1:9181
S3=127.0.0.1:9000
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 -p mock -p enrich
cargo build --quiet --release -p sluice-runtime
cargo build --quiet --release -p sluice-benches --bin kafka_copy
bash scripts/s3.sh start >/dev/null

trap 'bash scripts/kafka.sh stop "$PORT"' EXIT
TANSU=$(bash scripts/kafka.sh path)
R=${RUNTIME:-target/release/runtime}
W=target/wasm32-wasip2/release
LOGS=$(mktemp -d)
RUN=$(date +%s)
export SLUICE_CACHE_DIR=$TOOLS/bench-cache AWS_ACCESS_KEY_ID=admin AWS_SECRET_ACCESS_KEY=password
echo "logs: $LOGS"

fresh() {
  bash scripts/kafka.sh stop "$PORT"
  bash scripts/kafka.sh start "$PORT" >/dev/null
  for t in in out; do
    "$TANSU" topic create --broker "tcp://$B" --partitions "$PARTITIONS" "$t" >/dev/null
  done
  $R run --plugin $W/mock.wasm --rate 0 --count "$N" --sink "kafka://$B/in" 2>"$LOGS/fill.log"
}

# run NAME SINK: the runtime from `in` through enrich into SINK; its log is $LOGS/NAME.log and
# its peak resident memory (KiB) $LOGS/NAME.rss.
run() {
  fresh
  /usr/bin/time -o "$LOGS/$1.rss" -f %M $R run \
    --source "kafka://$B/in?group=$1&prop.session.timeout.ms=6000" --plugin $W/enrich.wasm \
    --sink "$2" --count "$N" 2>"$LOGS/$1.log"
}

for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS"
  run "kafka-$r" "kafka://$B/out"
  run "iceberg-$r" "iceberg://$CATALOG/bench/paths_${RUN}_$r?warehouse=warehouse&credential=admin:password&partition=day(timestamp)"
  run "parquet-$r" "s3://sluice-test/bench-paths/${RUN}_$r/?endpoint=http://$S3&format=parquet"
  fresh
  target/release/kafka_copy --enrich "$B" in out native "$N" >"$LOGS/native-$r.line"
done

python3 - "$N" "$ROUNDS" "$LOGS" "$PARTITIONS" <<'PY'
import re, statistics, subprocess, sys
n, rounds, logs, partitions = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def span(log):
    out = subprocess.run(["python3", "scripts/bench/span.py", log, "first records read",
                          "every output durable"], capture_output=True, text=True, check=True)
    return float(out.stdout)
rate, rss, commits = {}, {}, []
for name in ("kafka", "iceberg", "parquet"):
    rate[name] = [n / span(f"{logs}/{name}-{r}.log") for r in range(1, rounds + 1)]
    rss[name] = [int(open(f"{logs}/{name}-{r}.rss").read().split()[-1]) / 1024 for r in range(1, rounds + 1)]
for r in range(1, rounds + 1):
    commits += [int(m) for m in re.findall(r"commit_ms=(\d+)", open(f"{logs}/iceberg-{r}.log").read())]
rate["native"] = [float(re.search(r"= (\d+) records/s", open(f"{logs}/native-{r}.line").read()).group(1))
                  for r in range(1, rounds + 1)]
med = {k: statistics.median(v) for k, v in rate.items()}
each = lambda v: "(" + ", ".join(f"{x:.0f}" for x in v) + ")"
print(f"\nrecords: {n} on {partitions} partitions, rounds: {rounds} (medians)")
for name, label in (("kafka", "Kafka -> enrich -> Kafka"), ("iceberg", "Kafka -> enrich -> Iceberg"),
                    ("parquet", "Kafka -> enrich -> Parquet objects"), ("native", "native enrich copy loop")):
    mem = f"   peak RSS {statistics.median(rss[name]):.0f} MiB" if name in rss else ""
    print(f"{label:36} {med[name]:8.0f} records/s {each(rate[name])}{mem}")
print(f"iceberg / kafka = {med['iceberg'] / med['kafka']:.2f}   (goal >= 0.8)")
print(f"kafka / native  = {med['kafka'] / med['native']:.2f}   (goal >= 0.95)")
print(f"parquet / kafka = {med['parquet'] / med['kafka']:.2f}   (goal >= 0.8)")
commits.sort()
if commits:
    p = lambda q: commits[min(len(commits) - 1, int(q * len(commits)))]
    print(f"iceberg commits: {len(commits)}, latency p50 {p(0.5)} ms, p99 {p(0.99)} ms")
PY
