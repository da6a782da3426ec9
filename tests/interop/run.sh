#!/usr/bin/env bash
# Run the slixmpp interop suite against a built tern binary.
# Usage: tests/interop/run.sh [extra pytest args]
# Env: TERN_BIN (default: ../../target/debug/tern relative to this script),
#      TERN_INTEROP_LOG (server log_level, default "info").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
export TERN_BIN="${TERN_BIN:-$here/../../target/debug/tern}"

if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
            apt-get update -qq
            apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$venv"
        else
            echo "python3 -m venv failed; install python3-venv" >&2
            exit 2
        fi
    fi
fi

"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"

if [ ! -x "$TERN_BIN" ]; then
    echo "tern binary not found at $TERN_BIN (build: cargo build -p tern-node --bin tern)" >&2
    exit 2
fi

cd "$here"
set +e
"$venv/bin/python" -m pytest -q "$@"
code=$?
exit $code
