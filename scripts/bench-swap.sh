#!/usr/bin/env bash
# Hot-swap figures: a steady in-process stream (mock at RATE records/s -> mem:// -> enrich ->
# stdout), then
#   100 swaps through the admin API (enrich <-> enrich_next, 50 ms apart): the largest gap
#       between output records around each swap vs around random moments without a swap, and
#       each worker's cut-over time (instantiate + init of the new version);
#   resident memory before and after those 100 swaps, and after 100 more;
#   10 swaps through --watch: time from the file change to the new version being live.
# Usage: scripts/bench-swap.sh [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${1:-50000}
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
bash scripts/build-plugins.sh >/dev/null
cargo build --quiet --release -p sluice-runtime

W=$PWD/target/wasm32-wasip2/release
DIR=$(mktemp -d)
cp "$W/enrich.wasm" "$DIR/live.wasm"
cat >"$DIR/stream.toml" <<TOML
[[pipeline]]
name = "gen"
plugins = ["$W/mock.wasm"]
sink = "mem://s"
rate = $RATE

[[pipeline]]
name = "enrich"
source = "mem://s"
plugins = ["$DIR/live.wasm"]
sink = "stdout"
TOML
ADDR=127.0.0.1:$((20000 + RANDOM % 20000))
export SLUICE_CACHE_DIR=$DIR/cache SLUICE_LOG=info,sluice::pipeline=debug
target/release/runtime run --config "$DIR/stream.toml" --admin "$ADDR" --watch 2>"$DIR/log" \
  | python3 scripts/bench/arrivals.py >"$DIR/arrivals" &
trap 'kill %1 2>/dev/null || true' EXIT
until curl -s "http://$ADDR/pipelines" >/dev/null; do sleep 0.1; done
PID=$(pgrep -f "runtime run --config $DIR/stream.toml" | head -1)
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
now() { python3 -c 'import time; print(time.monotonic())'; }

sleep 3 # warm: every version compiled and cached once below, then steady
curl -s -o /dev/null -X PUT --data-binary "@$W/enrich_next.wasm" "http://$ADDR/pipelines/enrich/plugins/0"
curl -s -o /dev/null -X PUT --data-binary "@$W/enrich.wasm" "http://$ADDR/pipelines/enrich/plugins/0"
sleep 2
for _ in $(seq 10); do now >>"$DIR/quiet"; sleep 0.3; done
rss_before=$(rss)
for i in $(seq 100); do
  f=$W/enrich_next.wasm; [ $((i % 2)) = 0 ] && f=$W/enrich.wasm
  now >>"$DIR/swaps"
  curl -s -o /dev/null -X PUT --data-binary "@$f" "http://$ADDR/pipelines/enrich/plugins/0"
  sleep 0.05
done
sleep 1
rss_after=$(rss)
# 100 more: memory must not keep growing with the number of swaps.
for i in $(seq 100); do
  f=$W/enrich_next.wasm; [ $((i % 2)) = 0 ] && f=$W/enrich.wasm
  curl -s -o /dev/null -X PUT --data-binary "@$f" "http://$ADDR/pipelines/enrich/plugins/0"
  sleep 0.05
done
sleep 1
rss_after2=$(rss)
: >"$DIR/watch"
for i in $(seq 10); do
  f=$W/enrich_next.wasm; [ $((i % 2)) = 0 ] && f=$W/enrich.wasm
  want=$(sha256sum "$f" | cut -d' ' -f1)
  t0=$(now); cp "$f" "$DIR/live.wasm"
  until curl -s "http://$ADDR/pipelines" | grep -q "\"sha256\":\"$want\""; do sleep 0.01; done
  echo "$(now) $t0" >>"$DIR/watch"
done
kill -INT "$PID"; wait %1 || true

python3 - "$DIR" "$rss_before" "$rss_after" "$rss_after2" <<'PY'
import bisect, re, sys
d, before, after, after2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
arr = [float(x) for x in open(f"{d}/arrivals")]
def max_gap(t, lo=-0.005, hi=0.1):
    i, j = bisect.bisect_left(arr, t + lo), bisect.bisect_right(arr, t + hi)
    w = arr[i:j]
    return max((b - a for a, b in zip(w, w[1:])), default=0) * 1000
pct = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]
swaps = [max_gap(float(x)) for x in open(f"{d}/swaps")]
quiet = [max_gap(float(x)) for x in open(f"{d}/quiet")]
cut = [int(m) / 1000 for m in re.findall(r"cutover_us=(\d+)", open(f"{d}/log").read())]
watch = [(float(a) - float(b)) * 1000 for a, b in (l.split() for l in open(f"{d}/watch"))]
print(f"records out: {len(arr)}")
print(f"largest gap between output records, 100 ms after a swap: p50 {pct(swaps, .5):.2f} ms  p99 {pct(swaps, .99):.2f} ms  (no swap: p50 {pct(quiet, .5):.2f} ms  p99 {pct(quiet, .99):.2f} ms)")
print(f"worker cut-over (instantiate + init new version): n={len(cut)} p50 {pct(cut, .5):.3f} ms  p99 {pct(cut, .99):.3f} ms")
print(f"--watch, file change to live: p50 {pct(watch, .5):.0f} ms  max {max(watch):.0f} ms")
print(f"resident memory: {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after 100 swaps, {after2 / 1024:.1f} MiB after 200")
PY
