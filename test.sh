#!/usr/bin/env bash
# Runs every test of Tern on a fresh machine: formatting, lints, unit and integration tests
# (the storage tests against redb and a PostgreSQL server started here),
# and the interoperability suite with real XMPP clients (slixmpp, in a venv made here; Strophe.js
# in Debian's chromium, for WebSocket and BOSH).
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: $(cargo --version)"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    step "installing python3-venv"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3 venv support is missing: install python3-venv" >&2
        exit 1
    fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the tern binary"
cargo build --workspace --bins --locked

step "PostgreSQL for the storage tests (tests/services/postgres.sh; installed if missing)"
PG_DIR="$(mktemp -d)"
trap 'tests/services/postgres.sh stop "$PG_DIR" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
TERN_TEST_POSTGRES_URL="$(tests/services/postgres.sh start "$PG_DIR")"
export TERN_TEST_POSTGRES_URL

step "unit and integration tests"
cargo test --workspace --locked

step "browser test prerequisites: chromium and Strophe.js (tests/browser/install.sh)"
tests/browser/install.sh

step "interoperability suite (slixmpp, and Strophe.js in headless chromium)"
TERN_BIN="$PWD/target/debug/tern" tests/interop/run.sh
