#!/usr/bin/env bash
# Installs what tests/interop/test_browser.py needs; does nothing for what is already there.
#   - Debian's `chromium` package (headless Chromium, run by the test; no WebDriver), when no
#     `chromium` command exists. Needs root; runs `apt-get update` only if the install fails.
#   - Debian's `nodejs` and `npm`, only if `npm` is missing.
#   - The npm packages pinned in package-lock.json (Strophe.js, a web XMPP client speaking
#     WebSocket and BOSH), with `npm ci` into tests/browser/node_modules, when node_modules is
#     missing or older than package-lock.json.
# Usage: tests/browser/install.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "install.sh: $* missing and not root; install it with apt-get" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq "$@" >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq "$@" >/dev/null
    fi
}

if ! command -v chromium >/dev/null; then
    echo "install.sh: installing chromium"
    apt_install chromium
fi

if ! command -v npm >/dev/null; then
    echo "install.sh: installing nodejs and npm"
    apt_install nodejs npm
fi

stamp="$here/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$here/package-lock.json" -nt "$stamp" ] \
    || [ ! -f "$here/node_modules/strophe.js/dist/strophe.umd.min.js" ]; then
    echo "install.sh: npm ci in tests/browser"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
