#!/usr/bin/env bash
# What the console's browser test drives: Debian's Chromium and playwright-core from npm (which
# uses that Chromium; it downloads no browser), installed once under $SLUICE_TOOLS_DIR (default
# ~/.cache/sluice-tools); a second run is a no-op.
#   browser-tools.sh install   installs what is missing
#   browser-tools.sh where     prints playwright-core's directory, or fails saying how to install
set -euo pipefail
TOOLS=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}
PLAYWRIGHT_VERSION=1.64.1
DIR=$TOOLS/playwright-core-$PLAYWRIGHT_VERSION
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

apt_install() {
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
  }
}

case "${1:-install}" in
  install)
    if [ ! -x /usr/bin/chromium ]; then
      echo "installing chromium (Debian)" >&2
      apt_install chromium
    fi
    if [ ! -f "$DIR/.installed" ]; then
      echo "installing playwright-core $PLAYWRIGHT_VERSION (npm)" >&2
      command -v npm >/dev/null || apt_install nodejs npm
      rm -rf "$DIR" && mkdir -p "$DIR"
      (cd "$DIR" && echo '{"private":true}' >package.json &&
        npm install --silent --no-audit --no-fund "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null)
      touch "$DIR/.installed"
    fi
    ;;
  where)
    if [ ! -f "$DIR/.installed" ] || [ ! -x /usr/bin/chromium ]; then
      echo "the browser test needs Chromium and playwright-core: run scripts/browser-tools.sh install" >&2
      exit 1
    fi
    echo "$DIR/node_modules/playwright-core"
    ;;
  *)
    echo "usage: browser-tools.sh install|where" >&2
    exit 2
    ;;
esac
