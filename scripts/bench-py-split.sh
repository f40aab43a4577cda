#!/usr/bin/env bash
# Where a Python plugin's time goes: enrich-py's process() split into wire decode, json.loads,
# the rule, json.dumps and wire encode, timed natively (CPython, scripts/bench/python_split.py)
# and inside the component (the same code under componentize-py, scripts/bench/py_profile),
# over the same N mock sessions in batches of 256; then the end-to-end runs it explains.
# Usage: scripts/bench-py-split.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-20000}
bash scripts/build-plugins.sh >/dev/null 2>&1
cargo build --quiet --release -p sluice-runtime
T=${CARGO_TARGET_DIR:-$PWD/target}
R=$T/release/runtime
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

$R run --log warn --plugin "$T/wasm32-wasip2/release/mock.wasm" --set seed=1 --rate 0 \
  --count "$N" >"$DIR/sessions.jsonl"
echo "native:"
python3 scripts/bench/python_split.py "$DIR/sessions.jsonl"

mkdir "$DIR/app"
cp scripts/bench/py_profile/app.py "$DIR/app/app.py"
cp plugins/enrich-py/app.py "$DIR/app/enrich_app.py"
bash scripts/plugin-tools.sh python "$DIR/app" transform "$DIR/profile.wasm" >/dev/null
echo "in the component (1 worker, batch 256):"
SLUICE_CACHE_DIR=$DIR/cache $R run --workers 1 --batch-size 256 --allow clock --plugin "$DIR/profile.wasm" \
  <"$DIR/sessions.jsonl" 2>&1 >/dev/null | grep "per record" | tail -1 | sed 's/.*per record/per record/'
