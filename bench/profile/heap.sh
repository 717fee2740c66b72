#!/usr/bin/env bash
# bench/profile/heap.sh — what one idle client holds, in bytes, by allocation site.
#
#   bash bench/profile/heap.sh [webrtcroom|chatroom] [websocket|polling] [CLIENTS]
#
# Runs the release gateway under heaptrack (Debian: heaptrack) twice, with CLIENTS (default
# 2,000) and then twice as many idle clients of the load generator (`loadgen join`, rooms of
# 4), and prints the difference per client grouped by allocation site (heap_sites.py), so the
# process's fixed memory cancels out; the RSS per client of both runs is printed too. Output:
# bench/results/heap-<protocol>-<transport>.md; heaptrack's files stay in a /tmp directory.
# Traffic stays on loopback; each run is limited in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROTO=${1:-webrtcroom}
TRANSPORT=${2:-websocket}
CLIENTS=${3:-2000}
OUT=bench/results/heap-$PROTO-$TRANSPORT.md
WORK=$(mktemp -d /tmp/gw-heap.XXXXXX)
command -v heaptrack >/dev/null || { echo "heap.sh needs heaptrack (apt-get install heaptrack)" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p signal-gateway -p loadgen 2>&1 | tail -1 >&2
for b in signal-gateway loadgen; do cp "target/release/$b" "$WORK/$b"; done
other=chatroom; [ "$PROTO" = chatroom ] && other=webrtcroom

SPID=""
cleanup() { [ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null; true; }
trap cleanup EXIT

measure() { # clients -> $WORK/peaks-<clients>.txt, prints the RSS per client
  local n=$1 url=""
  heaptrack -o "$WORK/heap-$n" "$WORK/signal-gateway" --config bench/gateway-bench.toml \
    --set "$other.enabled=false" --set "$PROTO.listen=127.0.0.1:0" --set admin.listen=127.0.0.1:0 \
    >"$WORK/server-$n.out" 2>&1 &
  local hp=$!
  for _ in $(seq 1 300); do
    url=$(grep -m1 -E "^$PROTO listening on http://" "$WORK/server-$n.out" 2>/dev/null \
      | grep -oE 'http://[0-9.]+:[0-9]+' | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "the gateway did not start under heaptrack" >&2; cat "$WORK/server-$n.out" >&2; exit 1; }
  SPID=$(pgrep -f "^$WORK/signal-gateway " | head -1)
  timeout 300 "$WORK/loadgen" join --url "$url" --proto "$PROTO" --transport "$TRANSPORT" \
    --clients "$n" --room-size 4 --concurrency 50 --idle 4 --server-pid "$SPID" --progress 0 \
    --join-timeout 120 >"$WORK/lg-$n.json" 2>"$WORK/lg-$n.err"
  kill -INT "$SPID"
  wait "$hp" || true
  SPID=""
  heaptrack_print -f "$WORK/heap-$n".*zst --print-peaks 1 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 --peak-limit 100 --sub-peak-limit 200 >"$WORK/peaks-$n.txt" 2>/dev/null
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"{d['join']['joined']} clients joined, RSS {d['server']['rss_per_client_kib']} KiB per client\")" "$WORK/lg-$n.json"
}

mkdir -p bench/results
small=$(measure "$CLIENTS")
large=$(measure $((CLIENTS * 2)))
{
  echo "# Heap per idle client by allocation site: $PROTO, $TRANSPORT ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD))"
  echo
  echo "heaptrack peaks of the run with $((CLIENTS * 2)) clients minus the run with $CLIENTS, per client."
  echo "Runs: $small; $large. Made by \`bash bench/profile/heap.sh $PROTO $TRANSPORT $CLIENTS\`."
  echo
  python3 bench/profile/heap_sites.py "$WORK/peaks-$CLIENTS.txt" "$WORK/peaks-$((CLIENTS * 2)).txt" "$CLIENTS"
} | tee "$OUT"
echo "heaptrack data: $WORK" >&2
