#!/usr/bin/env bash
# The tools that build plugins in Python and JavaScript, pinned and installed once under
# $SLUICE_TOOLS_DIR (default ~/.cache/sluice-tools); a second run is a no-op.
#   plugin-tools.sh install
#   plugin-tools.sh python APP_DIR WORLD OUT.wasm   (componentize-py; APP_DIR holds app.py)
#   plugin-tools.sh js SOURCE.js WORLD OUT.wasm     (componentize-js)
# Both use the repository's wit/ and the guest helpers in plugins/sdk/{python,js}.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}
COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0
PY=$TOOLS/componentize-py-$COMPONENTIZE_PY_VERSION
JS=$TOOLS/componentize-js-$COMPONENTIZE_JS_VERSION

install() {
  if [ ! -f "$PY/.installed" ]; then
    echo "installing componentize-py $COMPONENTIZE_PY_VERSION (PyPI)" >&2
    rm -rf "$PY"
    python3 -m venv "$PY" 2>/dev/null || {
      apt-get install -y -q python3-venv >/dev/null && python3 -m venv "$PY"
    }
    "$PY/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
    touch "$PY/.installed"
  fi
  if [ ! -f "$JS/.installed" ]; then
    echo "installing componentize-js $COMPONENTIZE_JS_VERSION (npm)" >&2
    command -v npm >/dev/null || apt-get install -y -q nodejs npm >/dev/null
    rm -rf "$JS" && mkdir -p "$JS"
    (cd "$JS" && echo '{"private":true,"type":"module"}' >package.json &&
      npm install --silent --no-audit --no-fund "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION")
    touch "$JS/.installed"
  fi
  # The builder runs from the tools directory so it resolves componentize-js from there.
  cp "$ROOT/plugins/sdk/js/build.mjs" "$JS/build.mjs"
}

case "${1:-}" in
  install) install ;;
  python)
    [ $# -eq 4 ] || { echo "usage: $0 python APP_DIR WORLD OUT.wasm" >&2; exit 2; }
    install
    app=$(cd "$2" && pwd)
    out=$(cd "$(dirname "$4")" && pwd)/$(basename "$4")
    wit=$app/wit; [ -d "$wit" ] || wit=$ROOT/wit
    # Outside any venv, so only the app and the helper are bundled, not the build tool; an app
    # that ships its own sluice.py (a generated project does) uses that one.
    (cd "$app" && env -u VIRTUAL_ENV "$PY/bin/componentize-py" -d "$wit" -w "$3" componentize app \
      -p "$app" -p "$ROOT/plugins/sdk/python" -o "$out")
    ;;
  js)
    [ $# -eq 4 ] || { echo "usage: $0 js SOURCE.js WORLD OUT.wasm" >&2; exit 2; }
    install
    dir=$(cd "$(dirname "$2")" && pwd)
    out=$(cd "$(dirname "$4")" && pwd)/$(basename "$4")
    # componentize-js reads the modules beside the source: stage them with the WIT and, unless
    # the project ships its own, the helper.
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    cp "$dir"/*.js "$stage"/
    [ -f "$stage/sluice.js" ] || cp "$ROOT/plugins/sdk/js/sluice.js" "$stage/"
    [ -f "$stage/stateful.js" ] || cp "$ROOT/plugins/sdk/js/stateful.js" "$stage/"
    if [ -d "$dir/wit" ]; then cp -r "$dir/wit" "$stage/wit"; else cp -r "$ROOT/wit" "$stage/wit"; fi
    (cd "$stage" && node "$JS/build.mjs" "$(basename "$2")" wit "$3" "$out")
    ;;
  *) echo "usage: $0 install | python APP_DIR WORLD OUT.wasm | js SOURCE.js WORLD OUT.wasm" >&2; exit 2 ;;
esac
