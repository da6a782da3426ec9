#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, in a directory of its own.
#
#   tests/services/postgres.sh start DIR   initdb in DIR/data, start the server on 127.0.0.1
#                                          (a free port; its Unix socket in DIR), create the
#                                          database `tern_test`, print its URL on stdout
#                                          (also written to DIR/url)
#   tests/services/postgres.sh stop DIR    stop that server (fast shutdown); DIR is left for
#                                          the caller to remove
#
# Installs Debian's `postgresql` when no PostgreSQL server binaries are found (root only;
# `apt-get update` only if the install fails), without letting the package create or start
# its own default cluster. As root, the server runs as the `postgres` user (initdb refuses
# root), and DIR is given to that user.
#
# The server is for tests only: it trusts every connection from 127.0.0.1 (nothing else can
# reach it) and runs with fsync off. Its default collation is English (en_US.UTF-8 when that
# locale exists, else ICU's en-US on PostgreSQL 15 and later), not byte order, so a test that
# relied on the database's text order instead of the node's would show it; C.UTF-8 only when
# neither is available.
#
# Everything but the URL goes to stderr, so `url="$(tests/services/postgres.sh start DIR)"`.
set -euo pipefail

DATABASE=tern_test
SUPERUSER=tern

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}

log() { echo "postgres.sh: $*" >&2; }

[ $# -eq 2 ] || usage
command="$1"
dir="$2"

# The newest server binaries Debian installed (/usr/lib/postgresql/<version>/bin).
find_bindir() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$found" ] && [ -x "$found/initdb" ] && [ -x "$found/pg_ctl" ]; then
        echo "$found"
    fi
}

install_postgresql() {
    if [ "$(id -u)" != 0 ]; then
        log "PostgreSQL server binaries are missing and this is not root: install Debian's postgresql"
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt_get_install() {
        if ! apt-get install -y -qq "$@" >/dev/null; then
            apt-get update -qq
            apt-get install -y -qq "$@" >/dev/null
        fi
    }
    log "installing Debian's postgresql"
    # postgresql-common first, told not to make (and start) a default cluster on 5432.
    apt_get_install postgresql-common
    local conf=/etc/postgresql-common/createcluster.conf
    if [ -f "$conf" ]; then
        if grep -q '^#\?\s*create_main_cluster' "$conf"; then
            sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' "$conf"
        else
            echo 'create_main_cluster = false' >>"$conf"
        fi
    fi
    apt_get_install postgresql
}

# Runs a server binary as the server's user: `postgres` when we are root, else ourselves.
as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

pick_locale() {
    if locale -a 2>/dev/null | grep -qix 'en_US\.utf-\?8'; then
        echo en_US.UTF-8
    else
        echo C.UTF-8
    fi
}

start() {
    local bindir
    bindir="$(find_bindir)"
    if [ -z "$bindir" ]; then
        install_postgresql
        bindir="$(find_bindir)"
        [ -n "$bindir" ] || { log "no PostgreSQL server binaries after installing"; exit 1; }
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [ -e "$dir/data" ]; then
        log "$dir/data already exists: stop and remove the old server first"
        exit 1
    fi
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
    fi
    local locale collation
    locale="$(pick_locale)"
    collation=(--locale="$locale")
    collation_name="$locale"
    # PostgreSQL 15 and later can take the default collation from ICU, so en-US ordering is
    # there even when the system has no en_US locale.
    if [ "$locale" != en_US.UTF-8 ] && "$bindir/initdb" --help | grep -q -- '--locale-provider'; then
        collation=(--locale="$locale" --locale-provider=icu --icu-locale=en-US)
        collation_name="ICU en-US"
    fi
    log "initdb in $dir/data ($("$bindir/postgres" --version), collation $collation_name)"
    if ! as_server_user "$bindir/initdb" -D "$dir/data" -U "$SUPERUSER" --auth=trust \
        -E UTF8 "${collation[@]}" >"$dir/initdb.log" 2>&1; then
        if [ "$collation_name" = "ICU en-US" ]; then
            # A server built without ICU: the plain locale then.
            log "no ICU collation; using $locale"
            rm -rf "$dir/data"
            as_server_user "$bindir/initdb" -D "$dir/data" -U "$SUPERUSER" --auth=trust \
                -E UTF8 --locale="$locale" >"$dir/initdb.log" 2>&1 \
                || { cat "$dir/initdb.log" >&2; exit 1; }
        else
            cat "$dir/initdb.log" >&2
            exit 1
        fi
    fi

    local port tries=0
    while :; do
        port="$(free_port)"
        if as_server_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            start >/dev/null; then
            break
        fi
        tries=$((tries + 1))
        if [ "$tries" -ge 3 ]; then
            log "the server did not start; its log:"
            cat "$dir/postgres.log" >&2 || true
            exit 1
        fi
        log "start on port $port failed, trying another port"
    done
    echo "$port" >"$dir/port"
    "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$SUPERUSER" "$DATABASE"
    local url="postgres://$SUPERUSER@127.0.0.1:$port/$DATABASE"
    echo "$url" >"$dir/url"
    log "server up on 127.0.0.1:$port (pid $(head -n 1 "$dir/data/postmaster.pid"))"
    echo "$url"
}

stop() {
    if [ ! -f "$dir/data/postmaster.pid" ]; then
        log "no server running in $dir"
        return 0
    fi
    local bindir
    bindir="$(find_bindir)"
    [ -n "$bindir" ] || { log "no PostgreSQL server binaries"; exit 1; }
    as_server_user "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    log "server in $dir stopped"
}

case "$command" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
