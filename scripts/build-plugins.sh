#!/usr/bin/env bash
# Builds the plugins both ways a plugin author can: the wasm32-wasip2 target and cargo-component.
# Installs what that needs (wasm targets, cargo-component 0.21.1) only when it is missing. Then
# the Python and JavaScript plugins, with the tools of scripts/plugin-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PLUGINS=(-p mock -p enrich -p identity -p testkit -p producer -p rollup -p dedup -p statekit)
# enrich-next uses enrich as a library without its export (default features off). Built on its
# own, first: built together, cargo would unify enrich's features (and export it twice), and a
# later build of enrich alone rewrites enrich.wasm with its export.
LIBRARY_USERS=(-p enrich-next)
CARGO_COMPONENT_VERSION=0.21.1

installed_targets=$(rustup target list --installed)
for target in wasm32-wasip2 wasm32-wasip1; do
  grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done

if ! cargo component --version 2>/dev/null | grep -q "cargo-component[a-z-]* $CARGO_COMPONENT_VERSION\$"; then
  echo "installing cargo-component $CARGO_COMPONENT_VERSION (about 11 CPU-minutes, once)" >&2
  cargo install --locked cargo-component --version "$CARGO_COMPONENT_VERSION"
fi

# -> target/wasm32-wasip2/release/{mock,enrich,identity,testkit,not-a-plugin}.wasm
cargo build --release --target wasm32-wasip2 "${LIBRARY_USERS[@]}"
cargo build --release --target wasm32-wasip2 "${PLUGINS[@]}"
# -> target/wasm32-wasip1/release/{mock,enrich,testkit}.wasm (componentized with the WASI adapter)
cargo component build --release "${LIBRARY_USERS[@]}"
cargo component build --release "${PLUGINS[@]}"

# The enrich rule in Python (componentize-py) and JavaScript (componentize-js), and the rollup in
# Python, rebuilt only when a source, the helper or the WIT changed
# -> target/guest/enrich-{py,js}.wasm, target/guest/rollup-py.wasm
out=${CARGO_TARGET_DIR:-target}/guest
mkdir -p "$out"
stale() { [ ! -f "$1" ] || [ -n "$(find "${@:2}" -newer "$1" -type f 2>/dev/null | head -1)" ]; }
if stale "$out/enrich-py.wasm" plugins/enrich-py plugins/sdk/python wit scripts/plugin-tools.sh; then
  bash scripts/plugin-tools.sh python plugins/enrich-py transform "$out/enrich-py.wasm"
fi
if stale "$out/enrich-js.wasm" plugins/enrich-js plugins/sdk/js wit scripts/plugin-tools.sh; then
  bash scripts/plugin-tools.sh js plugins/enrich-js/enrich.js transform "$out/enrich-js.wasm"
fi
if stale "$out/rollup-py.wasm" plugins/rollup-py plugins/sdk/python wit scripts/plugin-tools.sh; then
  bash scripts/plugin-tools.sh python plugins/rollup-py stateful "$out/rollup-py.wasm"
fi
