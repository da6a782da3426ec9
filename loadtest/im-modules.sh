#!/usr/bin/env bash
# Section 6 of docs/benchmarks.md: the IM modules, off vs on, one binary, one after the other.
set -u
T="$(cd "$(dirname "$0")/.." && pwd)/target/release"
W="${WORKDIR:-$(mktemp -d)}"; cd "$W"; echo "working in $W"
run() {
  local name=$1 modules=$2 lt=$3
  rm -rf data-$name; mkdir -p data-$name
  cat > $name.toml <<EOT
[general]
domains = ["localhost"]
data_dir = "$W/data-$name"
log_level = "warn"

[[listen.c2s]]
address = "127.0.0.1:25222"
tls = "starttls"

[admin]
address = "127.0.0.1:25551"

[limits]
max_connections = 10000

$modules
EOT
  $T/tern serve --config $name.toml > $name.log 2>&1 &
  sleep 2
  PID=$(pgrep -f "tern serve --config $name.toml")
  $T/tern-loadtest chat --server 127.0.0.1:25222 --users 400 --provision admin --tern-data data-$name --server-pid $PID --rate 4000 --duration 20s --quiet $lt --json $name-4000.json > $name-4000.txt 2>&1
  $T/tern-loadtest chat --server 127.0.0.1:25222 --users 400 --server-pid $PID --rate 8000 --duration 15s --quiet $lt --json $name-8000.json > $name-8000.txt 2>&1
  $T/tern-loadtest idle --server 127.0.0.1:25222 --users 2000 --provision admin --tern-data data-$name --prefix idle --server-pid $PID --quiet $lt --json $name-idle.json > $name-idle.txt 2>&1
  kill $PID; sleep 2
  echo "== $name"; grep -hE "delivery|latency|server cpu|per connection|bytes" $name-4000.txt $name-8000.txt $name-idle.txt
}
OFF='[modules.mam]
enabled = false
[modules.carbons]
enabled = false
[modules.blocking]
enabled = false
[modules.csi]
enabled = false
[modules.stream_management]
enabled = false
[modules.pep]
enabled = false'
NOMAM='[modules.mam]
enabled = false'
run base "$OFF" ""
run nomam "$NOMAM" ""
run all "" ""
run allsm "" "--stream-management"
