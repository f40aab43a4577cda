#!/usr/bin/env bash
# The rollup's windowed count against PyFlink (apache-flink 2.3.0 from the Python registry, a
# local mini-cluster on the machine's Java, parallelism 2), on the same file of N sessions over
# 30 minutes of event time; both close every window at the end of the input. Sluice reads it
# as one object (one lane) through rollup.wasm (Rust)
# and through rollup-py.wasm (Python), into JSON-lines objects. Flink twice: in SQL (its JVM
# operators, no Python at run time) and in the DataStream API with the logic in Python (json,
# key, reduce: how the stack's users write their jobs). Every total is checked against N. Wall
# time of each whole process, start-up included (the plugin compiled and cached before, as a
# production runtime has it), and Flink's job alone.
# Usage: scripts/bench-pyflink.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-200000}
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}
FLINK=$TOOLS/pyflink
if [ ! -x "$FLINK/bin/python" ] || ! "$FLINK/bin/python" -c 'import pyflink' 2>/dev/null; then
  echo "installing apache-flink 2.3.0 (PyPI) into $FLINK" >&2
  python3 -m venv "$FLINK"
  "$FLINK/bin/pip" install --quiet --disable-pip-version-check apache-flink==2.3.0
fi
cargo build --quiet --release --target wasm32-wasip2 -p rollup
cargo build --quiet --release -p sluice-runtime
bash scripts/build-plugins.sh >/dev/null
R=target/release/runtime
W=target/wasm32-wasip2/release
DIR=$(mktemp -d)
mkdir -p "$DIR/in"
python3 - "$N" "$DIR/in/sessions.jsonl" <<'PY'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
base, span = 1_796_112_000_000, 30 * 60 * 1000
countries = ["Greece", "Italy", "Spain", "France", "Portugal"]
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({"session_id": f"s{i}", "ts_ms": base + i * span // n,
                            "country": countries[i % 5], "status": ["accepted", "rejected"][(i // 5) % 2]}) + "\n")
PY

total() { find "$1" -type f ! -name '.*' -exec cat {} + | python3 -c "import json,sys; print(sum(json.loads(l)['sessions'] for l in sys.stdin if l.strip()))"; }
sluice() { # NAME PLUGIN
  local start
  # Compiled once and cached (as in production): the timed run does not compile.
  $R run --plugin "$2" --checkpoints "file://$DIR/warm-$1" </dev/null >/dev/null 2>&1
  start=$(date +%s.%N)
  $R run --source "file://$DIR/in?format=jsonl&follow=false&group=$1" --plugin "$2" \
    --set time_field=ts_ms --checkpoints "file://$DIR/checkpoints-$1" \
    --sink "file://$DIR/$1?format=jsonl" 2>"$DIR/$1.log"
  echo "$1 $(python3 -c "import time; print(time.time() - $start)") $(total "$DIR/$1")"
}
flink() { # NAME SCRIPT
  local line
  line=$("$FLINK/bin/python" "$2" "$DIR/in/sessions.jsonl" "$DIR/$1" 2>"$DIR/$1.log" | tail -1)
  echo "$1 $(echo "$line" | sed -E 's/.* in ([0-9.]+) s \(job\), ([0-9.]+) s.*/\1 \2/') $(total "$DIR/$1")"
}
results=$(
  sluice rust $W/rollup.wasm
  sluice python target/guest/rollup-py.wasm
  flink sql scripts/bench/pyflink_rollup.py
  flink datastream scripts/bench/pyflink_rollup_python.py
)

python3 - "$N" "$results" <<'PY'
import sys
n, lines = int(sys.argv[1]), sys.argv[2].splitlines()
r = {l.split()[0]: l.split()[1:] for l in lines}
print(f"\n{n} sessions, one-minute windows per country and status, counts summed:")
for name, label in [("rust", "sluice, rollup.wasm (Rust)"), ("python", "sluice, rollup-py.wasm (Python)")]:
    s, tot = float(r[name][0]), r[name][1]
    print(f"  {label:34} {s:7.2f} s whole process {n / s:9.0f} records/s  total {tot}")
for name, label in [("sql", "pyflink SQL (JVM operators)"), ("datastream", "pyflink DataStream, Python logic")]:
    job, whole, tot = float(r[name][0]), float(r[name][1]), r[name][2]
    print(f"  {label:34} {job:7.2f} s job, {whole:6.2f} s whole {n / job:9.0f} records/s  total {tot}")
for sl, fl in [("rust", "sql"), ("python", "datastream"), ("rust", "datastream")]:
    s, job, whole = float(r[sl][0]), float(r[fl][0]), float(r[fl][1])
    print(f"  sluice {sl} / pyflink {fl}: {job / s:5.1f}x the job alone, {whole / s:5.1f}x whole")
PY
