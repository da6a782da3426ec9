#!/usr/bin/env bash
# Section 8 of docs/benchmarks.md: web transports against TCP, one release binary, a fresh
# server per transport: chat at 4,000 and 8,000 msgs/s (400 users) and 2,000 idle sessions.
# Needs `cargo build --release -p tern-node --bin tern -p tern-loadtest`.
set -u
T="$(cd "$(dirname "$0")/.." && pwd)/target/release"
W="${WORKDIR:-$(mktemp -d)}"; cd "$W"; echo "working in $W"
run() {
  local name=$1 target=$2
  rm -rf data-$name; mkdir -p data-$name
  cat > $name.toml <<EOT
[general]
domains = ["localhost"]
data_dir = "$W/data-$name"
log_level = "warn"

[[listen.c2s]]
address = "127.0.0.1:25222"
tls = "starttls"

[[listen.c2s]]
address = "127.0.0.1:25223"
tls = "direct"

# Plain HTTP counted as encrypted (as behind a TLS-terminating proxy), so every run logs in
# with the same SASL mechanism.
[[listen.http]]
address = "127.0.0.1:25280"
secure = true

[[listen.http]]
address = "127.0.0.1:25443"
tls = "direct"

[admin]
address = "127.0.0.1:25551"

[limits]
max_connections = 10000

[http]
max_sessions_per_ip = 10000
EOT
  $T/tern serve --config $name.toml > $name.log 2>&1 &
  sleep 2
  PID=$(pgrep -f "tern serve --config $name.toml")
  $T/tern-loadtest chat $target --users 400 --provision admin --tern-data data-$name --server-pid $PID --rate 4000 --duration 20s --quiet --json $name-4000.json > $name-4000.txt 2>&1
  $T/tern-loadtest chat $target --users 400 --server-pid $PID --rate 8000 --duration 15s --quiet --json $name-8000.json > $name-8000.txt 2>&1
  $T/tern-loadtest idle $target --users 2000 --provision admin --tern-data data-$name --prefix idle --server-pid $PID --quiet --json $name-idle.json > $name-idle.txt 2>&1
  kill $PID; sleep 2
  echo "== $name"; grep -hE "delivery|latency|server cpu|per connection|bytes" $name-4000.txt $name-8000.txt $name-idle.txt
}
run tcp-starttls "--server 127.0.0.1:25222"
run tcp-direct "--server 127.0.0.1:25223 --tls direct"
run ws "--server 127.0.0.1:25280 --websocket /ws"
run wss "--server 127.0.0.1:25443 --tls direct --websocket /ws"
