#!/usr/bin/env bash
# bench/run.sh — the whole benchmark comparison in one command.
#
#   bash bench/run.sh              full run: ~5-8 minutes of measuring (+ ~5 for a first build)
#   bash bench/run.sh --quick      ~2-4 minutes: fewer clients, shorter windows, no 10k run
#
# Options:
#   --servers gateway,node,raw     which servers (default: all three)
#   --protocols webrtcroom,chatroom
#   --no-build                     use the release binaries already in target/release
#   --results DIR                  where to write (default bench/results)
#   --append                       add to the existing raw.jsonl instead of starting afresh
#                                  (e.g. to re-measure one server: --servers gateway --append)
#   --attempts N                   measure a scenario up to N times (default 3) while other
#                                  processes use more than 0.25 cores during it (shared machine)
#   --scenarios LIST               only these scenarios (default: all; names below)
#   --eio 3|4                      Engine.IO version of every client (default: the protocol's
#                                  own: 3 for WebRtcRoom, 4 for chatroom)
#   --gateway-env KEY=VALUE        environment of the gateway process (repeatable), e.g.
#                                  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 or
#                                  MALLOC_ARENA_MAX=1 to compare allocators (bench/README.md)
#   --gateway-set KEY=VALUE        a gateway setting on top of bench/gateway-bench.toml (repeatable)
#   --gateway-bin PATH             measure this gateway binary instead of target/release's
#   --no-report                    leave results.md and chart.svg alone (raw.jsonl only)
#
# What it does:
#   1. builds the release binaries (signal-gateway, loadgen, rawrelay, bench-report) and
#      installs the Node baselines' npm packages (bench/baselines/node) when missing;
#   2. for each protocol and each server — the gateway (bench/gateway-bench.toml, one protocol
#      enabled), the Node socket.io baseline (socket.io 2.x for WebRtcRoom, 4.x for
#      chatroom), the raw Rust WebSocket relay — starts a fresh server process per scenario
#      and drives it with the same load generator:
#        join          2,000 clients, rooms of 4, 100 connecting at once; idle 5 s; RSS
#        join10k       10,000 idle clients, rooms of 4 (RSS per client at scale)
#        join10k-mixed the same with every second client on HTTP long-polling (one GET
#                      pending each) and the others on WebSocket (socket.io servers only)
#        relay-closed  200 pairs, window 8 per client, 2 s warm-up + 8 s measured
#        relay-open    200 pairs, 5,000 msgs/s in total, 2 s + 8 s (latency)
#        churn         50 slots: connect, join, 20-message burst each way, leave; 8 s
#        relay-polling 50 pairs over HTTP long-polling, window 4 (socket.io servers only)
#      With two or more cores the server runs on core 0 and the generator on core 1
#      (taskset), so the server gets exactly one core;
#   3. writes bench/results/raw.jsonl (every figure, one JSON line per run), env.json,
#      run.log, and — through bench-report — results.md (tables, ratios, targets) and
#      chart.svg (latency by percentile at 5k msgs/s, throughput, memory).
# Traffic stays on loopback; every step has a time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=full
SERVERS=gateway,node,raw
PROTOCOLS=webrtcroom,chatroom
BUILD=1
RESULTS=bench/results
APPEND=0
SCENARIOS=all
EIO=""
GATEWAY_ENV=()
GATEWAY_SET=()
GATEWAY_BIN=""
REPORT=1
ATTEMPTS=3      # a scenario disturbed by other processes is measured again, at most this often
MAX_OTHER=0.25  # cores other processes may use during a measurement before it counts as disturbed
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick ;;
    --servers) SERVERS=$2; shift ;;
    --protocols) PROTOCOLS=$2; shift ;;
    --no-build) BUILD=0 ;;
    --results) RESULTS=$2; shift ;;
    --append) APPEND=1 ;;
    --attempts) ATTEMPTS=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --eio) EIO=$2; shift ;;
    --gateway-env) GATEWAY_ENV+=("$2"); shift ;;
    --gateway-set) GATEWAY_SET+=(--set "$2"); shift ;;
    --gateway-bin) GATEWAY_BIN=$2; shift ;;
    --no-report) REPORT=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$RESULTS"
LOG=$RESULTS/run.log
RAW=$RESULTS/raw.jsonl
TMP=$(mktemp -d)
if [ "$APPEND" = 1 ]; then
  echo "--- appended run $(date -u +%FT%TZ)" >>"$LOG"
else
  : > "$LOG"
  : > "$RAW"
fi
say() { echo "$*" | tee -a "$LOG" >&2; }

SPID=""
cleanup() {
  if [ -n "$SPID" ]; then kill -9 "$SPID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# ---- environment -------------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
NOFILE=$(ulimit -n)
CORES=$(nproc)
if [ "$CORES" -ge 2 ] && command -v taskset >/dev/null; then
  PIN_SERVER=(taskset -c 0)
  PIN_GEN=(taskset -c 1)
  PINNING="server on core 0, generator on core 1"
else
  PIN_SERVER=()
  PIN_GEN=()
  PINNING="none ($CORES core(s))"
fi
RUN_10K=1
if [ "$MODE" = quick ]; then RUN_10K=0; fi
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt 10500 ]; then
  say "open-file limit is $NOFILE (< 10,500): skipping the 10,000-client run"
  RUN_10K=0
fi

# ---- build -------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
  say "building release binaries (first build takes ~5 minutes)"
  cargo build --release -p signal-gateway -p loadgen -p rawrelay -p bench-report 2>&1 | tail -3 | tee -a "$LOG" >&2
fi
# Run copies of the binaries: target/ may be shared with other builds, and a rebuild in the
# middle of the run must not change what is being measured.
BIN=$TMP/bin
mkdir -p "$BIN"
for b in signal-gateway loadgen rawrelay bench-report; do
  src=target/release/$b
  if [ "$b" = signal-gateway ] && [ -n "$GATEWAY_BIN" ]; then src=$GATEWAY_BIN; fi
  if [ ! -x "$src" ]; then
    # Only what the chosen servers and the report need must exist.
    case "$b" in
      rawrelay) [[ ",$SERVERS," != *",raw,"* ]] && continue ;;
      bench-report) [ "$REPORT" = 0 ] && continue ;;
    esac
    say "missing $src"; exit 1
  fi
  cp "$src" "$BIN/$b"
done
LOADGEN=$BIN/loadgen

HAVE_NODE=1
if [[ ",$SERVERS," == *",node,"* ]]; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing Node.js and npm from Debian"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >>"$LOG" 2>&1 || true
    fi
  fi
  if ! command -v node >/dev/null; then
    say "node is not available: the Node baselines are skipped"
    HAVE_NODE=0
  elif [ ! -d bench/baselines/node/node_modules/socket.io ] || [ ! -d bench/baselines/node/node_modules/socket.io-v2 ]; then
    say "installing the Node baselines' packages (npm ci)"
    (cd bench/baselines/node && npm ci --no-audit --no-fund --loglevel=error) >>"$LOG" 2>&1
  fi
fi

git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then git_rev="$git_rev + uncommitted changes in src/"; fi
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
node_v=$(node --version 2>/dev/null || echo none)
if [ "$APPEND" = 1 ] && [ -f "$RESULTS/env.json" ]; then
  python3 - "$RESULTS/env.json" "$(date -u +%Y-%m-%dT%H:%M:%SZ) ($SERVERS / $PROTOCOLS)" <<'PY' || true
import json, sys
p = sys.argv[1]; e = json.load(open(p))
old = e.get("cells re-measured")
e["cells re-measured"] = (old + "; " if old else "") + sys.argv[2]
json.dump(e, open(p, "w"), ensure_ascii=False, indent=1)
PY
else
cat > "$RESULTS/env.json" <<EOF
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "mode": "$MODE", "gateway commit": "$git_rev",
 "cpu": "$cpu_model", "cores": $CORES, "pinning": "$PINNING", "kernel": "$(uname -r)",
 "rustc": "$(rustc --version 2>/dev/null | cut -d' ' -f2)", "node": "$node_v",
 "open files": "$NOFILE", "loadavg at start": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "gateway env": "${GATEWAY_ENV[*]}", "gateway settings": "${GATEWAY_SET[*]}"}
EOF
fi

# ---- servers -----------------------------------------------------------------------------
URL=""
start_server() { # server protocol
  local server=$1 proto=$2 out=$TMP/server.out
  : > "$out"
  case "$server" in
    gateway)
      local other=chatroom; [ "$proto" = chatroom ] && other=webrtcroom
      env "${GATEWAY_ENV[@]}" "${PIN_SERVER[@]}" "$BIN/signal-gateway" --config bench/gateway-bench.toml \
        --set "$other.enabled=false" --set "$proto.listen=127.0.0.1:0" --set admin.listen=127.0.0.1:0 \
        "${GATEWAY_SET[@]}" >"$out" 2>&1 &
      ;;
    node)
      "${PIN_SERVER[@]}" node "bench/baselines/node/$proto.js" --port 0 >"$out" 2>&1 &
      ;;
    raw)
      "${PIN_SERVER[@]}" "$BIN/rawrelay" --listen 127.0.0.1:0 >"$out" 2>&1 &
      ;;
  esac
  SPID=$!
  local pattern="listening on http://"
  [ "$server" = gateway ] && pattern="^$proto listening on http://"
  for _ in $(seq 1 150); do
    URL=$(grep -m1 -E "$pattern" "$out" 2>/dev/null | grep -oE 'http://[0-9.]+:[0-9]+' | head -1 || true)
    [ -n "$URL" ] && return 0
    if ! kill -0 "$SPID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  say "  $server ($proto) did not start:"; sed 's/^/    /' "$out" | tail -20 | tee -a "$LOG" >&2
  SPID=""
  return 1
}

stop_server() {
  [ -n "$SPID" ] || return 0
  kill "$SPID" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  # Keep the server's log (warnings and errors only: the bench config logs at warn).
  if [ -s "$TMP/server.out" ]; then sed 's/^/    server: /' "$TMP/server.out" | tail -20 >>"$LOG"; fi
  SPID=""
}

summarize() { # one line per run for the terminal
  python3 - "$1" <<'PY' 2>/dev/null || tail -c 300 "$1"
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
parts = []
j = d.get("join") or {}
if j.get("joins_per_s") is not None: parts.append(f"joins/s {j['joins_per_s']:.0f}")
s = d.get("server") or {}
if s.get("rss_per_client_kib") is not None: parts.append(f"RSS/client {s['rss_per_client_kib']:.1f} KiB")
r = d.get("relay")
if r:
    parts.append(f"delivered {r['delivered_per_s']:.0f}/s")
    if r.get("latency_us"): parts.append(f"p50 {r['latency_us']['p50']/1000:.3f} ms p99 {r['latency_us']['p99']/1000:.3f} ms")
    parts.append(f"lost {r['lost']} reordered {r['reordered']}")
    parts.append(f"cpu server {r.get('server_cpu_util')} gen {r.get('loadgen_cpu_util')}")
c = d.get("churn")
if c: parts.append(f"{c['cycles_per_s']:.0f} pairs/s lost {c['lost']}")
e = d.get("errors") or {}
bad = {k: v for k, v in e.items() if v}
if bad: parts.append(f"errors {bad}")
if d.get("error"): parts.append(d["error"])
print("    " + ", ".join(parts))
PY
}

# Cores used by other processes while the scenario measured (from the generator's JSON).
disturbance() {
  python3 bench/other_cpu.py "$1" 2>/dev/null || echo 0
}

run_scenario() { # server protocol name loadgen-args...
  local server=$1 proto=$2 name=$3; shift 3
  if [ "$SCENARIOS" != all ] && [[ ",$SCENARIOS," != *",$name,"* ]]; then return 0; fi
  if [ -n "$EIO" ]; then set -- "$@" --eio "$EIO"; fi
  local attempt
  for attempt in $(seq 1 "$ATTEMPTS"); do
    if ! start_server "$server" "$proto"; then return 0; fi
    say "  $server / $proto / $name"
    local out=$TMP/lg.json
    : > "$out"
    local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
    if timeout 400 "${PIN_GEN[@]}" "$LOADGEN" "$@" --url "$URL" --proto "$proto" --server-pid "$SPID" \
        --label "$proto/$server/$name" --meta "server=$server" --meta "protocol=$proto" \
        --meta "scenario=$name" --meta "loadavg=$load" --meta "attempt=$attempt" >"$out" 2>>"$LOG"; then
      if grep -q '^{' "$out"; then
        grep '^{' "$out" | tail -1 >>"$RAW"
        summarize "$out" | tee -a "$LOG" >&2
      else
        say "    no result"
      fi
    else
      say "    load generator failed (exit $?)"
    fi
    stop_server
    # Other processes on the machine took CPU while this ran: measure it again (the report
    # keeps, per cell, the attempt disturbed least; every attempt stays in raw.jsonl).
    local other; other=$(disturbance "$out")
    if python3 -c "import sys; sys.exit(0 if float('$other') <= $MAX_OTHER else 1)"; then break; fi
    if [ "$attempt" -lt "$ATTEMPTS" ]; then
      say "    disturbed: other processes used $other cores meanwhile; measuring again"
    fi
  done
}

if [ "$MODE" = quick ]; then
  JOIN=(join --clients 1000 --room-size 4 --concurrency 100 --idle 2)
  CLOSED=(relay --pairs 200 --window 8 --warmup 1 --duration 3)
  OPEN=(relay --pairs 200 --rate 5000 --warmup 1 --duration 3)
  CHURN=(churn --pairs 50 --burst 20 --duration 3)
  POLL=(relay --transport polling --pairs 20 --window 4 --warmup 1 --duration 2)
else
  JOIN=(join --clients 2000 --room-size 4 --concurrency 100 --idle 5)
  CLOSED=(relay --pairs 200 --window 8 --warmup 2 --duration 8)
  OPEN=(relay --pairs 200 --rate 5000 --warmup 2 --duration 8)
  CHURN=(churn --pairs 50 --burst 20 --duration 8)
  POLL=(relay --transport polling --pairs 50 --window 4 --warmup 1 --duration 5)
fi
JOIN10K=(join --clients 10000 --room-size 4 --concurrency 100 --idle 5 --sources 4 --join-timeout 60)
JOIN10K_MIXED=("${JOIN10K[@]}" --polling-share 0.5)

started=$(date +%s)
IFS=, read -r -a protos <<<"$PROTOCOLS"
IFS=, read -r -a servers <<<"$SERVERS"
for proto in "${protos[@]}"; do
  for server in "${servers[@]}"; do
    if [ "$server" = node ] && [ "$HAVE_NODE" = 0 ]; then continue; fi
    say "== $proto: $server"
    run_scenario "$server" "$proto" join "${JOIN[@]}" --progress 0
    if [ "$RUN_10K" = 1 ]; then
      run_scenario "$server" "$proto" join10k "${JOIN10K[@]}" --progress 5
      # Polling clients hold two connections each: 15,000 descriptors in all.
      if [ "$server" != raw ] && { [ "$NOFILE" = unlimited ] || [ "$NOFILE" -ge 15500 ]; }; then
        run_scenario "$server" "$proto" join10k-mixed "${JOIN10K_MIXED[@]}" --progress 5
      fi
    fi
    run_scenario "$server" "$proto" relay-closed "${CLOSED[@]}" --progress 0
    run_scenario "$server" "$proto" relay-open "${OPEN[@]}" --progress 0
    run_scenario "$server" "$proto" churn "${CHURN[@]}" --progress 0
    if [ "$server" != raw ]; then
      run_scenario "$server" "$proto" relay-polling "${POLL[@]}" --progress 0
    fi
  done
done

python3 - "$RESULTS/env.json" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(( $(date +%s) - started ))" "$APPEND" <<'PY' || true
import json, sys
p = sys.argv[1]; e = json.load(open(p))
if sys.argv[4] != "1":
    e["loadavg at end"] = sys.argv[2]; e["measuring time (s)"] = int(sys.argv[3])
json.dump(e, open(p, "w"), ensure_ascii=False, indent=1)
PY
if [ "$REPORT" = 1 ]; then
  "$BIN/bench-report" "$RESULTS" >/dev/null
  say "results: $RESULTS/results.md, $RESULTS/chart.svg (raw figures: $RESULTS/raw.jsonl)"
else
  say "raw figures: $RESULTS/raw.jsonl"
fi
