#!/usr/bin/env bash
# bench/profile/profile.sh — where does the gateway spend its time per relayed message?
#
#   bash bench/profile/profile.sh perf      [webrtcroom|chatroom|raw-webrtcroom|raw-chatroom]
#   bash bench/profile/profile.sh callgrind [webrtcroom|chatroom|raw-webrtcroom|raw-chatroom]
#
# perf:      the gateway pinned to core 0 under the closed-loop relay load (200 pairs, window 8)
#            from the load generator on core 1; `perf record` (cpu-clock, DWARF call graphs)
#            for 6 s, then classify.py groups the samples by component and prints µs per
#            message. Needs `perf` (Debian: linux-perf); cpu-clock sampling works even where
#            hardware counters are not available.
# callgrind: the server under `valgrind --tool=callgrind` (instruction counts: exact and
#            repeatable, independent of other load on the machine), 20 pairs, window 4,
#            collection switched on once every client has joined; prints instructions per
#            relayed message and the top functions (callgrind_annotate).
# Output goes to bench/results/profile-<tool>-<target>.txt (and the raw data to /tmp).
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOL=${1:-perf}
WHAT=${2:-webrtcroom}
OUT=bench/results/profile-$TOOL-$WHAT.txt
WORK=$(mktemp -d /tmp/gw-profile.XXXXXX)
mkdir -p bench/results
cargo build --release -p signal-gateway -p loadgen -p rawrelay 2>&1 | tail -1 >&2
# Run copies: target/ is shared, and a rebuild during the recording would leave perf without
# the symbols of the binary it sampled.
for b in signal-gateway loadgen rawrelay; do cp "target/release/$b" "$WORK/$b"; done

proto=${WHAT#raw-}
case "$WHAT" in
  raw-*) server=("$WORK/rawrelay" --listen 127.0.0.1:0) ; pattern="listening on http://" ;;
  *)
    other=chatroom; [ "$proto" = chatroom ] && other=webrtcroom
    server=("$WORK/signal-gateway" --config bench/gateway-bench.toml --set "$other.enabled=false"
            --set "$proto.listen=127.0.0.1:0" --set admin.listen=127.0.0.1:0)
    pattern="^$proto listening on http://" ;;
esac

SPID=""
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; true; }
trap cleanup EXIT

start() { # prefix...
  "$@" "${server[@]}" >"$WORK/server.out" 2>&1 &
  SPID=$!
  for _ in $(seq 1 300); do
    URL=$(grep -m1 -E "$pattern" "$WORK/server.out" 2>/dev/null | grep -oE 'http://[0-9.]+:[0-9]+' | head -1 || true)
    [ -n "$URL" ] && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$WORK/server.out"; exit 1
}

case "$TOOL" in
  perf)
    start taskset -c 0
    taskset -c 1 "$WORK/loadgen" relay --url "$URL" --proto "$proto" --pairs 200 --window 8 \
      --warmup 3 --duration 8 --server-pid "$SPID" --progress 0 >"$WORK/lg.json" 2>"$WORK/lg.err" &
    LG=$!
    sleep 4
    perf record -F 1999 -g --call-graph dwarf,16384 -p "$SPID" -o "$WORK/perf.data" -- sleep 6 2>"$WORK/perf.err"
    wait $LG || true
    rate=$(python3 -c "import json,sys; d=json.loads(open('$WORK/lg.json').read().strip().splitlines()[-1]); r=d['relay']; print(r['delivered_per_s']/max(r['server_cpu_util'],0.01))")
    perf script -i "$WORK/perf.data" -F tid,ip,sym --inline 2>/dev/null >"$WORK/perf.txt"
    {
      echo "# perf profile of $WHAT under closed-loop relay (200 pairs, window 8), $(date -u +%FT%TZ)"
      echo "# load generator: $(tail -1 "$WORK/lg.json" | python3 -c "import json,sys; r=json.load(sys.stdin)['relay']; print(f\"delivered {r['delivered_per_s']:.0f}/s, server CPU {r['server_cpu_util']} cores, generator CPU {r['loadgen_cpu_util']} cores\")")"
      echo "# per-message costs below use delivered/s ÷ server CPU = $rate msgs per CPU-second"
      python3 bench/profile/classify.py "$WORK/perf.txt" "$rate"
    } | tee "$OUT"
    ;;
  callgrind)
    start valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out"
    "$WORK/loadgen" relay --url "$URL" --proto "$proto" --pairs 20 --window 4 --warmup 2 \
      --duration 20 --join-timeout 60 --progress 1 >"$WORK/lg.json" 2>"$WORK/lg.err" &
    LG=$!
    for _ in $(seq 1 600); do grep -q "joined:" "$WORK/lg.err" 2>/dev/null && break; sleep 0.1; done
    callgrind_control -i on "$SPID" >/dev/null
    wait $LG || true
    callgrind_control -i off "$SPID" >/dev/null
    callgrind_control -d "$SPID" >/dev/null
    sleep 1
    kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=""
    msgs=$(python3 -c "import json; d=json.loads(open('$WORK/lg.json').read().strip().splitlines()[-1]); print(d['relay']['received'])")
    set +o pipefail # head and grep -m1 close their pipes early
    file=$(ls -S "$WORK"/callgrind.out* | head -1)
    total=$(callgrind_annotate "$file" 2>/dev/null | grep -m1 -E "PROGRAM TOTALS" | grep -oE '^[0-9,]+' | tr -d ,)
    {
      echo "# callgrind profile of $WHAT: closed-loop relay, 20 pairs, window 4, $(date -u +%FT%TZ)"
      echo "# messages relayed while collecting: $msgs; instructions: $total"
      python3 -c "print(f'# instructions per relayed message: {$total/$msgs:.0f}')"
      echo
      echo "## exclusive (self) cost, top 40"
      callgrind_annotate --threshold=100 "$file" 2>/dev/null | sed -n '/file:function/,$p' | head -42
      echo
      echo "## inclusive cost, top 60"
      callgrind_annotate --inclusive=yes --threshold=100 "$file" 2>/dev/null | sed -n '/file:function/,$p' | head -62
    } | sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/library/##' | cut -c1-220 | tee "$OUT"
    ;;
  *) echo "usage: $0 perf|callgrind [webrtcroom|chatroom|raw-webrtcroom|raw-chatroom]"; exit 2 ;;
esac
echo "written: $OUT (raw data in $WORK)" >&2
