#!/usr/bin/env bash
# Section 7 of docs/benchmarks.md: one room homed at dc1 of `tern dev mesh --dcs 3`, its occupants
# spread over the three datacenters; groupchat at a steady rate. Prints tern-loadtest's summary
# and, from dc1's /metrics sampled each second, the envelopes dc1 sent over its bridges per room
# message once the joins are done. Usage: loadtest/muc-mesh.sh USERS RATE [DURATION]
set -u
USERS=${1:-300}
RATE=${2:-20}
DURATION=${3:-30s}
T="$(cd "$(dirname "$0")/.." && pwd)/target/release"
W="${WORKDIR:-$(mktemp -d)}"
B=${BASE_PORT:-30000}
mkdir -p "$W"
echo "working in $W"
"$T/tern" dev mesh --dcs 3 --dir "$W" --no-start --base-port "$B" > "$W/mesh.out" || exit 1
for k in 1 2 3; do
  printf '\n[modules.muc]\nmax_users = 5000\nmax_messages_per_second = 1000\n' >> "$W/dc$k/tern.toml"
  "$T/tern" serve --config "$W/dc$k/tern.toml" > "$W/dc$k/tern.log" 2>&1 &
done
sleep 4
PIDS=$(pgrep -d, -f "tern serve --config $W/")
ADMIN=$((B + 1000 + 329))
sample() {
  while true; do
    v=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^tern_mesh_stanzas_sent_total /{print $2}')
    echo "$(date +%s) $v"
    sleep 1
  done
}
sample > "$W/dc1-sent.txt" &
SAMPLER=$!
"$T/tern-loadtest" --server "127.0.0.1:$((B+1000)),127.0.0.1:$((B+2000)),127.0.0.1:$((B+3000))" \
  --tern-data "$W/dc1/data,$W/dc2/data,$W/dc3/data" --provision admin --users "$USERS" \
  --server-pid "$PIDS" --quiet \
  muc --room bench@muc.localhost --rate "$RATE" --senders 10 --duration "$DURATION" | tee "$W/muc.txt"
kill $SAMPLER
pkill -f "tern serve --config $W/"
# Envelopes per second over the last half of the message phase (the joins are long over),
# divided by the message rate.
python3 - "$W/dc1-sent.txt" "$RATE" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 2 and l.split()[1]]
rows = [(int(t), float(v)) for t, v in rows]
rate = float(sys.argv[2])
# the sampler ran through logins, joins and messages; take the window from 60% to 90% of it
n = len(rows)
a, b = rows[int(n * 0.6)], rows[int(n * 0.9)]
per_s = (b[1] - a[1]) / max(1, b[0] - a[0])
print(f"dc1 bridge envelopes: {per_s:.1f}/s over {b[0]-a[0]} s, {per_s / rate:.2f} per room message")
PY
