#!/usr/bin/env bash
# bench/soak.sh — keep thousands of clients joining, relaying and leaving for minutes, on both
# protocols at once, and check that the gateway gives everything back afterwards.
#
#   bash bench/soak.sh                    5 minutes, 1,000 churn slots per protocol
#   bash bench/soak.sh --minutes 2 --slots 400
#
# Each churn slot repeatedly connects two clients, joins them to a fresh room, relays a burst
# of 20 messages each way, leaves and disconnects (bench/loadgen, `churn`); with 1,000 slots
# per protocol that is up to 4,000 clients connected at any time. Every 10 s it samples the
# gateway's RSS and its rooms/members/connections gauges (admin /metrics). At the end, after
# the clients are gone and the chatroom grace period has passed, rooms and members must be
# back to 0; it reports RSS at start, peak and end, and sent vs delivered messages.
# Writes bench/results/soak.md and soak.csv. Loopback only; every step has a time limit.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=5
SLOTS=1000
RESULTS=bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --slots) SLOTS=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    *) echo "usage: bash bench/soak.sh [--minutes N] [--slots N] [--results DIR]" >&2; exit 2 ;;
  esac
done
SECONDS_RUN=$((MINUTES * 60))
mkdir -p "$RESULTS"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

echo "== building release binaries"
cargo build --release -p signal-gateway -p loadgen 2>&1 | tail -1
GW=target/release/signal-gateway
LG=target/release/loadgen
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT

# The benchmark settings (limits raised: thousands of clients come from one address), on
# ports of our own, both protocols, a short chatroom grace so the end state comes quickly.
"$GW" --config bench/gateway-bench.toml \
  --set webrtcroom.listen=127.0.0.1:0 --set chatroom.listen=127.0.0.1:0 \
  --set admin.listen=127.0.0.1:0 --set chatroom.reconnect_grace=3s >"$TMP/gw.out" 2>"$TMP/gw.err" &
GW_PID=$!
for _ in $(seq 100); do grep -q "^admin listening" "$TMP/gw.out" 2>/dev/null && break; sleep 0.1; done
url() { sed -n "s/^$1 listening on \([^ ]*\).*/\1/p" "$TMP/gw.out"; }
WEB=$(url webrtcroom); CHAT=$(url chatroom); ADMIN=$(url admin)
[ -n "$WEB" ] && [ -n "$CHAT" ] && [ -n "$ADMIN" ] || { echo "gateway did not start:"; cat "$TMP/gw.err"; exit 1; }

rss() { awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status"; }
gauge() { curl -s "$ADMIN/metrics" | awk -v m="$1" -v p="$2" '$1 ~ "^"m"\\{" && $1 ~ "protocol=\""p"\"" {s += $2} END {print s+0}'; }
sample() {
  printf '%s,%s,%s,%s,%s,%s,%s,%s\n' "$1" "$(rss)" \
    "$(gauge gateway_connections webrtcroom)" "$(gauge gateway_rooms webrtcroom)" "$(gauge gateway_members webrtcroom)" \
    "$(gauge gateway_connections chatroom)" "$(gauge gateway_rooms chatroom)" "$(gauge gateway_members chatroom)"
}

CSV="$RESULTS/soak.csv"
echo "seconds,rss_kib,webrtcroom_connections,webrtcroom_rooms,webrtcroom_members,chatroom_connections,chatroom_rooms,chatroom_members" >"$CSV"
sleep 1
RSS0=$(rss)
sample 0 >>"$CSV"
echo "== soak: $MINUTES min, $SLOTS churn slots per protocol; gateway RSS at start ${RSS0} KiB"

for proto in webrtcroom chatroom; do
  target=$WEB; [ "$proto" = chatroom ] && target=$CHAT
  timeout $((SECONDS_RUN + 120)) "$LG" churn --url "$target" --proto "$proto" --pairs "$SLOTS" --burst 20 \
    --duration "$SECONDS_RUN" --progress 0 --max-time $((SECONDS_RUN + 90)) --label "soak/$proto" \
    >"$TMP/$proto.json" 2>"$TMP/$proto.err" &
done

START=$(date +%s)
PEAK=$RSS0
while [ $(( $(date +%s) - START )) -lt "$SECONDS_RUN" ]; do
  sleep 10
  line=$(sample $(( $(date +%s) - START )))
  echo "$line" >>"$CSV"
  r=$(echo "$line" | cut -d, -f2); [ "$r" -gt "$PEAK" ] && PEAK=$r
  echo "  $line"
done
wait $(jobs -p | grep -v "^$GW_PID$") 2>/dev/null || true

# The clients are gone; chatroom members linger for the grace period (3 s here), and the
# gateway returns free memory a few seconds after the load has dropped.
sleep 12
curl -s "$ADMIN/metrics" >"$TMP/metrics.txt"
END_LINE=$(sample $(( $(date +%s) - START )))
echo "$END_LINE" >>"$CSV"
RSS1=$(echo "$END_LINE" | cut -d, -f2)
IFS=, read -r _ _ _ WR WM _ CR CM <<<"$END_LINE"

fig() { python3 -c "import json,sys; d=json.load(open('$1')); c=d.get('churn',{}); print(c.get('$2', 0))" 2>/dev/null || echo 0; }
{
  echo "# Soak"
  echo
  echo "\`bash bench/soak.sh --minutes $MINUTES --slots $SLOTS\` on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)."
  echo "Both protocols at once; each churn slot connects two clients, joins a fresh room, relays 20"
  echo "messages each way, leaves and disconnects, again and again."
  echo
  echo "| protocol | pair cycles | connections/s | messages sent | delivered | lost | reordered |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for proto in webrtcroom chatroom; do
    echo "| $proto | $(fig "$TMP/$proto.json" cycles) | $(fig "$TMP/$proto.json" connections_per_s) | $(fig "$TMP/$proto.json" sent) | $(fig "$TMP/$proto.json" received) | $(fig "$TMP/$proto.json" lost) | $(fig "$TMP/$proto.json" reordered) |"
  done
  echo
  echo "The gateway's own count of the same traffic (\`gateway_relayed_total\`, \`gateway_dropped_total\` by reason):"
  echo
  echo "| protocol | relayed | dropped (by reason) |"
  echo "|---|---:|---|"
  for proto in webrtcroom chatroom; do
    relayed=$(awk -v p="$proto" '$1 ~ /^gateway_relayed_total\{/ && $1 ~ "protocol=\""p"\"" {s += $2} END {print s+0}' "$TMP/metrics.txt")
    dropped=$(awk -v p="$proto" '$1 ~ /^gateway_dropped_total\{/ && $1 ~ "protocol=\""p"\"" {match($1, /reason="[^"]*"/); r = substr($1, RSTART + 8, RLENGTH - 9); printf "%s%s: %d", sep, r, $2; sep = ", "} END {if (!sep) printf "none"}' "$TMP/metrics.txt")
    echo "| $proto | $relayed | $dropped |"
  done
  echo
  echo "| gateway | value |"
  echo "|---|---:|"
  echo "| RSS at start (KiB) | $RSS0 |"
  echo "| RSS peak (KiB) | $PEAK |"
  echo "| RSS after the clients left (KiB) | $RSS1 |"
  echo "| rooms / members left, webrtcroom | $WR / $WM |"
  echo "| rooms / members left, chatroom | $CR / $CM |"
  echo
  echo "Samples every 10 s: \`soak.csv\`."
} >"$RESULTS/soak.md"
cat "$RESULTS/soak.md"

kill "$GW_PID" 2>/dev/null || true
wait "$GW_PID" 2>/dev/null || true
if [ "$WR$WM$CR$CM" != "0000" ]; then
  echo "soak: rooms or members were not released" >&2
  exit 1
fi
