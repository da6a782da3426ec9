#!/usr/bin/env bash
# Compares Tern with ejabberd and Prosody on this machine, all three over STARTTLS with
# SCRAM-SHA-256 against hashed credentials, on loopback only, driven by tern-loadtest.
#
# Usage: loadtest/compare.sh [--only NAME]... [--help]
#   --only NAME   run only this server (tern, ejabberd or prosody); repeat or comma-separate
#                 for several. Default: all three, in that order.
#
# Environment (defaults in brackets; QUICK=1 swaps in the small values shown second):
#   USERS [5000 | 200]          accounts online in chat, ramp and presence
#   IDLE [10000 | 500]          connections held by the idle scenario
#   LOGIN_USERS [5000 | 200]    accounts logged in by the login scenario
#   LOGIN_ROUNDS [2 | 2]
#   CHAT_RATE [1000 | 200]      msgs/s of the chat scenario;  CHAT_DURATION [20s | 5s]
#   RAMP_START [1000 | 200]     first ramp rate;  RAMP_FACTOR [1.25];  RAMP_STEP [10s | 3s]
#   RAMP_P99_MS [50]            latency bound of a sustained ramp step
#   IDLE_HOLD [10s | 3s]
#   PRESENCE_USERS [1000 | 100] accounts online in the presence scenario
#   PRESENCE_CONTACTS [10 | 5]  PRESENCE_RATE [200 | 50]  PRESENCE_DURATION [10s | 5s]
#   SCENARIOS ["idle login chat ramp presence"]   which scenarios run, in this order (idle
#                               first: its RSS baseline is then the freshly started server)
#   SASL [scram-sha-256]        the harness --sasl value
#   RESULTS [target/loadtest/<date>-<time>]       where JSON, HTML and logs are kept
#   OUT [docs/benchmarks.md | $RESULTS/benchmarks.md]  page whose comparison section is rewritten
#   SKIP_BUILD=1                use the binaries already in target/release
#   KEEP_WORK=1                 keep the temporary work directory (server state and logs)
#   LOADTEST_ARGS               extra global options for every harness run (e.g. "--threads 1")
#
# What it does: installs ejabberd, Prosody and openssl with apt-get if missing (and stops any
# system service the packages start), builds tern-loadtest and tern, makes a temporary work
# directory with a self-signed certificate, then for each server: start it with the config in
# loadtest/peers/<name>/ (all state in the work directory), wait for its port, create the
# accounts lt0..lt(N-1) (password loadtest-pw), run the scenarios, stop it. Finally
# `tern-loadtest compare` writes the comparison section of $OUT from all JSON results.
# Every process it starts is stopped on exit, including on errors and Ctrl-C.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/loadtest/peers"
HARNESS="$ROOT/target/release/tern-loadtest"
TERN="$ROOT/target/release/tern"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# ---------------------------------------------------------------- options

ONLY=()
while [ $# -gt 0 ]; do
    case "$1" in
        --only) [ $# -ge 2 ] || { echo "--only needs a server name" >&2; exit 2; }
                IFS=, read -r -a names <<< "$2"; ONLY+=("${names[@]}"); shift 2 ;;
        --only=*) IFS=, read -r -a names <<< "${1#--only=}"; ONLY+=("${names[@]}"); shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
SERVERS=(tern ejabberd prosody)
if [ ${#ONLY[@]} -gt 0 ]; then
    for n in "${ONLY[@]}"; do
        case "$n" in tern|ejabberd|prosody) ;; *) echo "--only: unknown server '$n' (tern, ejabberd, prosody)" >&2; exit 2 ;; esac
    done
    selected=()
    for s in "${SERVERS[@]}"; do
        for n in "${ONLY[@]}"; do [ "$n" = "$s" ] && { selected+=("$s"); break; }; done
    done
    SERVERS=("${selected[@]}")
fi
wants() { local s; for s in "${SERVERS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then q() { echo "$2"; }; else q() { echo "$1"; }; fi
USERS="${USERS:-$(q 5000 200)}"
IDLE="${IDLE:-$(q 10000 500)}"
LOGIN_USERS="${LOGIN_USERS:-$(q 5000 200)}"
LOGIN_ROUNDS="${LOGIN_ROUNDS:-2}"
CHAT_RATE="${CHAT_RATE:-$(q 1000 200)}"
CHAT_DURATION="${CHAT_DURATION:-$(q 20s 5s)}"
RAMP_START="${RAMP_START:-$(q 1000 200)}"
RAMP_FACTOR="${RAMP_FACTOR:-1.25}"
RAMP_STEP="${RAMP_STEP:-$(q 10s 3s)}"
RAMP_P99_MS="${RAMP_P99_MS:-50}"
IDLE_HOLD="${IDLE_HOLD:-$(q 10s 3s)}"
PRESENCE_USERS="${PRESENCE_USERS:-$(q 1000 100)}"
PRESENCE_CONTACTS="${PRESENCE_CONTACTS:-$(q 10 5)}"
PRESENCE_RATE="${PRESENCE_RATE:-$(q 200 50)}"
PRESENCE_DURATION="${PRESENCE_DURATION:-$(q 10s 5s)}"
SCENARIOS="${SCENARIOS:-idle login chat ramp presence}"
SASL="${SASL:-scram-sha-256}"
RESULTS="${RESULTS:-$ROOT/target/loadtest/$(date +%Y%m%d-%H%M%S)}"
if [ "$QUICK" = 1 ]; then OUT="${OUT:-$RESULTS/benchmarks.md}"; else OUT="${OUT:-$ROOT/docs/benchmarks.md}"; fi
read -r -a EXTRA <<< "${LOADTEST_ARGS:-}"
PASSWORD=loadtest-pw
PREFIX=lt
DOMAIN=localhost

# The accounts every scenario may use: lt0 .. lt(ACCOUNTS-1).
ACCOUNTS=$USERS
[ "$IDLE" -gt "$ACCOUNTS" ] && ACCOUNTS=$IDLE
[ "$LOGIN_USERS" -gt "$ACCOUNTS" ] && ACCOUNTS=$LOGIN_USERS

log() { printf '\n== %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "compare.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup

WORK=""
declare -A STARTED=()   # name -> pid of the process this script started for that server

# Every descendant of a process, deepest first.
descendants() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null || true); do
        descendants "$child"
        echo "$child"
    done
}

# Stops the process tree of server NAME: SIGTERM to the server process itself (a clean
# shutdown for ejabberd's beam.smp, Prosody's lua and tern), then to the rest of the tree,
# SIGKILL to whatever is left after 20 s. Only the ids found under the recorded pid are used.
stop_server() {
    local name="$1" root="${STARTED[$1]:-}" main pids p alive=""
    [ -n "$root" ] || return 0
    main="$(server_pid "$name" 2>/dev/null || true)"
    pids="$(descendants "$root") $root"
    if [ -n "$main" ]; then kill -TERM "$main" 2>/dev/null || true; fi
    for _ in $(seq 1 40); do
        kill -0 "${main:-$root}" 2>/dev/null || break
        sleep 0.25
    done
    pids="$pids $(descendants "$root")"
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 1 40); do
        alive=""
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.25
    done
    for p in $alive; do
        echo "compare.sh: $name: process $p ignored SIGTERM, killing it" >&2
        kill -KILL "$p" 2>/dev/null || true
    done
    wait "$root" 2>/dev/null || true
    unset "STARTED[$name]"
}

cleanup() {
    local rc=$? name
    trap - EXIT INT TERM
    for name in "${!STARTED[@]}"; do stop_server "$name"; done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${KEEP_WORK:-0}" = 1 ]; then
            echo "compare.sh: work directory kept: $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- prerequisites

need_pkgs=()
command -v openssl >/dev/null || need_pkgs+=(openssl)
wants ejabberd && ! command -v ejabberdctl >/dev/null && need_pkgs+=(ejabberd)
wants prosody && ! command -v prosody >/dev/null && need_pkgs+=(prosody)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}; run as root to install them with apt-get"
    log "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    # The packages may start system services on 5222/5269/5280: this script runs its own.
    for svc in ejabberd prosody; do
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$svc" ]; then
            service "$svc" stop >/dev/null 2>&1 || true
        fi
    done
fi
if wants ejabberd; then
    [ "$(id -u)" = 0 ] || die "ejabberd: Debian's ejabberdctl runs only as root or ejabberd; run as root or use --only tern,prosody"
    command -v erl >/dev/null || die "ejabberd is installed but erl is missing"
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building tern-loadtest and tern (release)"
    (cd "$ROOT" && cargo build --release -p tern-loadtest -p tern-node)
fi
[ -x "$HARNESS" ] || die "$HARNESS missing (cargo build --release -p tern-loadtest)"
wants tern && { [ -x "$TERN" ] || die "$TERN missing (cargo build --release -p tern-node)"; }

# Each connection is a file descriptor on both ends: take the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE + 1000)) ]; then
    echo "compare.sh: warning: open-file limit $(ulimit -n) is below IDLE=$IDLE + 1000" >&2
fi

# ---------------------------------------------------------------- work directory

WORK="$(mktemp -d /tmp/tern-compare.XXXXXX)"
chmod 755 "$WORK"   # the ejabberd user has to reach its spool under it
mkdir -p "$WORK/tls" "$RESULTS"
log "work directory $WORK, results in $RESULTS"

openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost \
    -keyout "$WORK/tls/localhost.key" -out "$WORK/tls/localhost.crt" 2>/dev/null
cat "$WORK/tls/localhost.crt" "$WORK/tls/localhost.key" > "$WORK/tls/localhost.pem"
chmod 640 "$WORK/tls/localhost.key" "$WORK/tls/localhost.pem"
getent group ejabberd >/dev/null && chgrp ejabberd "$WORK/tls/localhost.key" "$WORK/tls/localhost.pem"

# ---------------------------------------------------------------- per-server details

# Fills in a config template: @WORK@ and @COOKIE@.
render() { sed -e "s|@WORK@|$WORK|g" -e "s|@COOKIE@|${COOKIE:-}|g" "$1" > "$2"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

c2s_port() { case "$1" in tern) echo 5222 ;; ejabberd) echo 5322 ;; prosody) echo 5422 ;; esac; }

# Every port a server binds; all must be free before it starts.
server_ports() {
    case "$1" in
        tern) echo 5222 5223 5551 ;;
        ejabberd) echo 5322 5323 5328 5329 ;;
        prosody) echo 5422 5423 ;;
    esac
}

# The pid whose RSS and CPU time are the server's:
#   tern      the tern process this script started
#   ejabberd  the beam.smp child of the ejabberdctl process this script started
#   prosody   the lua interpreter this script started (prosody is a Lua script run directly)
server_pid() {
    local root="${STARTED[$1]:-}"
    [ -n "$root" ] || return 1
    case "$1" in
        ejabberd) pgrep -P "$root" -x beam.smp | head -n1 ;;
        *) echo "$root" ;;
    esac
}

ejabberdctl_args() {
    echo --config "$WORK/ejabberd/ejabberd.yml" --ctl-config "$WORK/ejabberd/ejabberdctl.cfg" \
        --spool "$WORK/ejabberd/spool" --logs "$WORK/ejabberd/logs"
}

start_server() {
    local name="$1" p
    for p in $(server_ports "$name"); do
        port_open "$p" && die "$name: 127.0.0.1:$p is already in use (another server running?)"
    done
    mkdir -p "$WORK/$name"
    case "$name" in
        tern)
            render "$PEERS/tern/tern.toml" "$WORK/tern/tern.toml"
            (cd "$WORK/tern" && exec "$TERN" serve --config "$WORK/tern/tern.toml") \
                > "$WORK/tern/stdout.log" 2>&1 &
            STARTED[tern]=$!
            ;;
        ejabberd)
            COOKIE="$(openssl rand -hex 16)"
            mkdir -p "$WORK/ejabberd/spool" "$WORK/ejabberd/logs"
            render "$PEERS/ejabberd/ejabberd.yml" "$WORK/ejabberd/ejabberd.yml"
            render "$PEERS/ejabberd/ejabberdctl.cfg" "$WORK/ejabberd/ejabberdctl.cfg"
            chown -R ejabberd:ejabberd "$WORK/ejabberd"
            # ejabberdctl as the ejabberd user runs erl itself (as root it would go through su);
            # HOME points into the work directory so Erlang finds no foreign ~/.erlang.
            # shellcheck disable=SC2046
            (cd "$WORK/ejabberd" && exec env HOME="$WORK/ejabberd" \
                setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
                ejabberdctl $(ejabberdctl_args) foreground) \
                > "$WORK/ejabberd/stdout.log" 2>&1 &
            STARTED[ejabberd]=$!
            ;;
        prosody)
            mkdir -p "$WORK/prosody/data"
            render "$PEERS/prosody/prosody.cfg.lua" "$WORK/prosody/prosody.cfg.lua"
            (cd "$WORK/prosody" && exec prosody -F --config "$WORK/prosody/prosody.cfg.lua") \
                > "$WORK/prosody/stdout.log" 2>&1 &
            STARTED[prosody]=$!
            ;;
    esac
    local port
    port="$(c2s_port "$name")"
    for _ in $(seq 1 240); do
        kill -0 "${STARTED[$name]}" 2>/dev/null || { tail -n 30 "$WORK/$name/stdout.log" >&2; die "$name exited while starting"; }
        port_open "$port" && break
        sleep 0.25
    done
    port_open "$port" || { tail -n 30 "$WORK/$name/stdout.log" >&2; die "$name: port $port not open after 60 s"; }
    # ejabberd opens its listeners before the HTTP API and the node are fully up.
    if [ "$name" = ejabberd ]; then
        for _ in $(seq 1 120); do port_open 5329 && break; sleep 0.25; done
    fi
    [ -n "$(server_pid "$name")" ] || die "$name: cannot find the server process"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }

# Creates lt0..lt(ACCOUNTS-1) with password loadtest-pw, by each server's fastest route.
provision() {
    local name="$1" pid t0 t1 c0 out
    pid="$(server_pid "$name")"
    c0="$(cpu_s "$pid")"
    t0="$(date +%s.%N)"
    case "$name" in
        tern)
            # The GraphQL admin API, many accounts per request.
            "$HARNESS" --server 127.0.0.1:5222 --domain "$DOMAIN" --users "$ACCOUNTS" \
                --prefix "$PREFIX" --password "$PASSWORD" --provision admin \
                --tern-data "$WORK/tern/data" --label tern --quiet "${EXTRA[@]}" provision
            ;;
        ejabberd)
            # SCRAM-SHA-256 credentials derived here with OpenSSL's PBKDF2 and handed to
            # ejabberd_auth over Erlang distribution: see loadtest/peers/ejabberd/provision.erl.
            out="$(LT_NODE=ejabberd-lt@localhost LT_HOST="$DOMAIN" LT_PREFIX="$PREFIX" \
                LT_USERS="$ACCOUNTS" LT_PASSWORD="$PASSWORD" LT_ITER=4096 HOME="$WORK" \
                erl -sname "ltprov$$@localhost" -setcookie "$COOKIE" -erl_epmd_port 5328 \
                -start_epmd false -dist_listen false -hidden -noshell \
                -eval "$(cat "$PEERS/ejabberd/provision.erl")")"
            echo "$out"
            ;;
        prosody)
            # One admin-shell session runs the whole loop inside the server (PBKDF2 via
            # OpenSSL), instead of one prosodyctl process per account.
            out="$(prosodyctl --config "$WORK/prosody/prosody.cfg.lua" shell \
                "local made, old, bad, first = 0, 0, 0, 'none'
                 for i = 0, $((ACCOUNTS - 1)) do
                   local ok, err = user:create('$PREFIX'..i..'@$DOMAIN', '$PASSWORD')
                   if ok then made = made + 1
                   elseif err == 'User exists' then old = old + 1
                   else bad = bad + 1; if first == 'none' then first = err end end
                 end
                 return bad == 0, ('created %d existed %d failed %d (%s)'):format(made, old, bad, first)" \
                2>&1 | grep -v 'certmanager' || true)"
            echo "$out"
            case "$out" in *"OK: created"*"failed 0 "*) ;; *) die "prosody: account creation failed" ;; esac
            ;;
    esac
    t1="$(date +%s.%N)"
    printf '%s: %d accounts in %.1f s (server CPU %.1f s)\n' "$name" "$ACCOUNTS" \
        "$(echo "$t1 - $t0" | bc)" "$(echo "$(cpu_s "$pid") - $c0" | bc)" | tee -a "$RESULTS/provision.txt" >&2
}

FAILED=()

# Runs one scenario against server NAME; a failure is recorded and the next one still runs.
scenario() {
    local name="$1" scen="$2" users pid rc
    shift 2
    case "$scen" in
        login) users=$LOGIN_USERS ;;
        idle) users=$IDLE ;;
        presence) users=$PRESENCE_USERS ;;
        *) users=$USERS ;;
    esac
    pid="$(server_pid "$name")"
    log "$name: $scen ($users users)"
    set +e
    "$HARNESS" --server "127.0.0.1:$(c2s_port "$name")" --domain "$DOMAIN" --tls starttls \
        --sasl "$SASL" --users "$users" --prefix "$PREFIX" --password "$PASSWORD" \
        --provision none --server-pid "$pid" --label "$name" \
        --json "$RESULTS/$name-$scen.json" --html "$RESULTS/$name-$scen.html" "${EXTRA[@]}" \
        "$scen" "$@" 2>&1 | tee "$RESULTS/$name-$scen.log"
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" != 0 ]; then
        echo "compare.sh: $name $scen failed (exit $rc)" >&2
        FAILED+=("$name/$scen")
    fi
    kill -0 "$pid" 2>/dev/null || die "$name died during $scen (logs: $WORK/$name)"
}

# ---------------------------------------------------------------- the runs

for name in "${SERVERS[@]}"; do
    log "$name: starting"
    start_server "$name"
    pid="$(server_pid "$name")"
    sleep 2
    echo "$name: pid $pid, idle RSS $(rss_kib "$pid") KiB after start" | tee -a "$RESULTS/idle-rss.txt" >&2
    log "$name: creating $ACCOUNTS accounts"
    provision "$name"
    for scen in $SCENARIOS; do
        case "$scen" in
            login) scenario "$name" login --rounds "$LOGIN_ROUNDS" ;;
            chat) scenario "$name" chat --rate "$CHAT_RATE" --duration "$CHAT_DURATION" ;;
            ramp) scenario "$name" ramp --start "$RAMP_START" --factor "$RAMP_FACTOR" \
                      --step-duration "$RAMP_STEP" --p99-ms "$RAMP_P99_MS" ;;
            idle) scenario "$name" idle --hold "$IDLE_HOLD" ;;
            presence) scenario "$name" presence --contacts "$PRESENCE_CONTACTS" \
                          --rate "$PRESENCE_RATE" --duration "$PRESENCE_DURATION" ;;
            *) die "SCENARIOS: unknown scenario '$scen'" ;;
        esac
    done
    log "$name: stopping"
    stop_server "$name"
    # Keep the server's own logs next to the results.
    mkdir -p "$RESULTS/$name-logs"
    find "$WORK/$name" -name '*.log' -exec cp {} "$RESULTS/$name-logs/" \;
done

# ---------------------------------------------------------------- the comparison

shopt -s nullglob
jsons=("$RESULTS"/*.json)
shopt -u nullglob
if [ ${#jsons[@]} -gt 0 ]; then
    if [ ! -e "$OUT" ] && [ -e "$ROOT/docs/benchmarks.md" ]; then cp "$ROOT/docs/benchmarks.md" "$OUT"; fi
    log "writing the comparison to $OUT"
    "$HARNESS" compare --result "${jsons[@]}" --out "$OUT"
else
    echo "compare.sh: no results to compare" >&2
fi

if [ ${#FAILED[@]} -gt 0 ]; then
    echo "compare.sh: failed scenarios: ${FAILED[*]}" >&2
    exit 1
fi
log "done: results in $RESULTS"
