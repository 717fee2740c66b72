#!/usr/bin/env bash
# bench/cluster.sh — what cluster mode costs (issue 10), every figure from the same run:
#
#   bash bench/cluster.sh                    # ~10–15 min of measuring (+ builds, see below)
#   bash bench/cluster.sh --quick            # shorter windows (1 s warm-up + 3 s), ~5 min
#
# Options:
#   --quick                  1 s warm-up + 3 s measured relay windows, 1,000 joining clients
#   --protocols LIST         webrtcroom,chatroom (default: both)
#   --no-build               use target/release as it is
#   --base-commit REV        the commit before cluster mode (default 76eea44)
#   --base-bin PATH          its release binary, already built (default: build it once with
#                            `git archive REV` into target/cluster-bench-base/REV/ and its own
#                            target dir there; later runs reuse it)
#   --results DIR            default bench/results
#   --attempts N             measure a cell up to N times (default 3) while other processes use
#                            more than 0.25 cores during it (shared machine)
#
# For each protocol and each scenario it measures, back to back, four configurations:
#   base     the single-node gateway of --base-commit (no cluster mode)
#   single   this commit's gateway, single node (no cluster.redis_url)
#   same     a three-node cluster on one redis-server; both clients of a pair (every member of
#            a room) on node A
#   cross    the same cluster; the second client of every pair (every second member of a
#            room) on node B (loadgen --peer-url): every relay crosses nodes through Redis
#            pub/sub. Node C is a member of the cluster and idle.
# Scenarios (bench/loadgen, the same parameters as bench/run.sh):
#   join          2,000 clients, rooms of 4, 100 connecting at once
#   relay-closed  200 pairs, window 8 per client, 2 s warm-up + 8 s measured
#   relay-open    200 pairs, 5,000 msgs/s in total, 2 s + 8 s (latency)
# plus, once per protocol, 5 s of the idle cluster (Redis commands of heartbeats and
# supervisors).
#
# Every configuration gets a fresh redis-server (own free loopback port, no persistence) and
# fresh gateway processes. With two or more cores, every server process (gateway nodes and
# redis-server) runs on core 0 and the generator on core 1 (taskset): the server side gets
# one core in every configuration, so throughputs compare like for like.
# The generator reads, at the start and end of each measured window, the CPU time of every
# node and of redis-server (/proc/PID/stat) and redis's `INFO commandstats`.
#
# Writes $RESULTS/cluster.jsonl (one JSON line per run, the generator's, plus the idle
# windows), cluster.md (bench/cluster-report.py: tables and ratios), cluster-env.json and
# cluster.log. Loopback only; every step has a time limit; everything it starts, it stops.
set -euo pipefail
# The whole run has a time limit: `timeout` ends it (the traps below stop what it started).
if [ -z "${CLUSTER_BENCH_LIMITED:-}" ]; then
  CLUSTER_BENCH_LIMITED=1 exec timeout --kill-after=30 5400 bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=full
PROTOCOLS=webrtcroom,chatroom
BUILD=1
BASE_COMMIT=76eea44
BASE_BIN=""
RESULTS=bench/results
ATTEMPTS=3
MAX_OTHER=0.25
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick ;;
    --protocols) PROTOCOLS=$2; shift ;;
    --no-build) BUILD=0 ;;
    --base-commit) BASE_COMMIT=$2; shift ;;
    --base-bin) BASE_BIN=$2; shift ;;
    --results) RESULTS=$2; shift ;;
    --attempts) ATTEMPTS=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "bench/cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
for tool in redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "bench/cluster.sh: $tool is required (apt-get install redis-server python3)" >&2; exit 1; }
done
mkdir -p "$RESULTS"
LOG=$RESULTS/cluster.log
RAW=$RESULTS/cluster.jsonl
: > "$LOG"
: > "$RAW"
TMP=$(mktemp -d)
say() { echo "$*" | tee -a "$LOG" >&2; }

PIDS=()          # every process this script started and has not stopped yet
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "bench/cluster.sh: stopped (signal or time limit)" >&2; exit 143' TERM INT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
CORES=$(nproc)
if [ "$CORES" -ge 2 ] && command -v taskset >/dev/null; then
  PIN_SERVER=(taskset -c 0); PIN_GEN=(taskset -c 1)
  PINNING="gateway nodes and redis-server on core 0, generator on core 1"
else
  PIN_SERVER=(); PIN_GEN=(); PINNING="none ($CORES core(s))"
fi

# ---- builds ------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
  say "building release binaries (signal-gateway, loadgen)"
  timeout 3000 cargo build --release -p signal-gateway -p loadgen 2>&1 | tail -3 | tee -a "$LOG" >&2
fi
if [ -z "$BASE_BIN" ]; then
  base_dir=$ROOT/target/cluster-bench-base/$BASE_COMMIT
  BASE_BIN=$base_dir/target/release/signal-gateway
  if [ ! -x "$BASE_BIN" ]; then
    say "building the base commit $BASE_COMMIT in $base_dir (its own target dir; first time only)"
    rm -rf "$base_dir/src"; mkdir -p "$base_dir/src"
    git archive "$BASE_COMMIT" | tar -x -C "$base_dir/src"
    (cd "$base_dir/src" && CARGO_TARGET_DIR=$base_dir/target timeout 3000 cargo build --release -p signal-gateway) 2>&1 | tail -3 | tee -a "$LOG" >&2
  fi
fi
BIN=$TMP/bin
mkdir -p "$BIN"
for f in target/release/signal-gateway target/release/loadgen "$BASE_BIN"; do
  [ -x "$f" ] || { say "missing $f"; exit 1; }
done
# Copies: target/ may be rebuilt by other processes while this runs.
cp target/release/signal-gateway "$BIN/gateway-head"
cp target/release/loadgen "$BIN/loadgen"
cp "$BASE_BIN" "$BIN/gateway-base"

head_rev=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then head_rev="$head_rev + uncommitted changes in src/"; fi
base_rev=$(git rev-parse --short "$BASE_COMMIT" 2>/dev/null || echo "$BASE_COMMIT")
cat > "$RESULTS/cluster-env.json" <<EOF
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "mode": "$MODE", "gateway commit": "$head_rev",
 "base commit": "$base_rev", "base binary": "$BASE_BIN",
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')", "cores": $CORES,
 "pinning": "$PINNING", "kernel": "$(uname -r)", "redis": "$(redis-server --version | grep -oE 'v=[0-9.]+' | cut -c3-)",
 "rustc": "$(rustc --version 2>/dev/null | cut -d' ' -f2)", "open files": "$(ulimit -n)",
 "loadavg at start": "$(cut -d' ' -f1-3 /proc/loadavg)"}
EOF

# ---- processes ---------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

REDIS_PID=""; REDIS_PORT=""
start_redis() {
  REDIS_PORT=$(free_port)
  "${PIN_SERVER[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --protected-mode yes --daemonize no --loglevel warning >"$TMP/redis.out" 2>&1 &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  for _ in $(seq 1 100); do
    if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then return 0; fi
    sleep 0.05
  done
  say "  redis-server did not start:"; tail -5 "$TMP/redis.out" | tee -a "$LOG" >&2
  return 1
}

# start_gateway NAME BIN PROTO [cluster]: sets URL_<NAME> and PID_<NAME>.
start_gateway() {
  local name=$1 bin=$2 proto=$3 cluster=${4:-} out=$TMP/gw-$1.out
  local other=chatroom; [ "$proto" = chatroom ] && other=webrtcroom
  local envs=()
  if [ -n "$cluster" ]; then
    envs=(GATEWAY_CLUSTER__REDIS_URL="redis://127.0.0.1:$REDIS_PORT/" GATEWAY_CLUSTER__NODE_ID="node$name")
  fi
  : > "$out"
  env "${envs[@]}" "${PIN_SERVER[@]}" "$BIN/$bin" --config bench/gateway-bench.toml \
    --set "$other.enabled=false" --set "$proto.listen=127.0.0.1:0" --set admin.listen=127.0.0.1:0 \
    >"$out" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  local url=""
  for _ in $(seq 1 150); do
    url=$(grep -m1 -E "^$proto listening on http://" "$out" 2>/dev/null | grep -oE 'http://[0-9.]+:[0-9]+' | head -1 || true)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    say "  gateway $name ($bin, $proto${cluster:+, cluster}) did not start:"; tail -20 "$out" | sed 's/^/    /' | tee -a "$LOG" >&2
    return 1
  fi
  printf -v "URL_$name" '%s' "$url"
  printf -v "PID_$name" '%s' "$pid"
}

stop_all() { # gateways first (graceful: they leave the cluster), then redis
  local p
  for p in "${PIDS[@]}"; do
    [ "$p" = "$REDIS_PID" ] && continue
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    [ "$p" = "$REDIS_PID" ] && continue
    for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  PIDS=(); REDIS_PID=""
  for f in "$TMP"/gw-*.out; do
    [ -s "$f" ] || continue
    grep -vE "listening on http|^admin|^$" "$f" | tail -20 | sed "s/^/    $(basename "$f" .out): /" >>"$LOG" || true
  done
}

# start_config CONFIG PROTO: the servers of one configuration; sets LG_ARGS (where the
# generator connects and what it watches).
LG_ARGS=()
start_config() {
  local config=$1 proto=$2
  case "$config" in
    base|single)
      local bin=gateway-head; [ "$config" = base ] && bin=gateway-base
      start_gateway A "$bin" "$proto" || return 1
      LG_ARGS=(--url "$URL_A" --server-pid "$PID_A")
      ;;
    same|cross)
      start_redis || return 1
      start_gateway A gateway-head "$proto" cluster || return 1
      start_gateway B gateway-head "$proto" cluster || return 1
      start_gateway C gateway-head "$proto" cluster || return 1
      LG_ARGS=(--url "$URL_A" --server-pid "$PID_A" --watch-pid "nodeB=$PID_B" --watch-pid "nodeC=$PID_C"
               --watch-pid "redis=$REDIS_PID" --redis "127.0.0.1:$REDIS_PORT")
      if [ "$config" = cross ]; then LG_ARGS+=(--peer-url "$URL_B"); fi
      ;;
  esac
}

summarize() {
  python3 - "$1" <<'PY' 2>/dev/null || tail -c 300 "$1"
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
parts = []
j = d.get("join") or {}
if d.get("scenario") == "join" and j.get("joins_per_s") is not None: parts.append(f"joins/s {j['joins_per_s']:.0f}")
r = d.get("relay")
if r:
    parts.append(f"delivered {r['delivered_per_s']:.0f}/s")
    if r.get("latency_us"): parts.append(f"p50 {r['latency_us']['p50']/1000:.3f} ms p99 {r['latency_us']['p99']/1000:.3f} ms")
    parts.append(f"lost {r['lost']} reordered {r['reordered']}")
w = d.get("window") or {}
cpu = w.get("cpu_s") or {}
if cpu: parts.append("cpu s " + " ".join(f"{k}={v:.2f}" for k, v in cpu.items() if v is not None))
other = (r or {}).get("other_cpu_util", (d.get("server") or {}).get("other_cpu_util_joining"))
parts.append(f"others {other}")
e = {k: v for k, v in (d.get("errors") or {}).items() if v}
if e: parts.append(f"errors {e}")
if d.get("error"): parts.append(d["error"])
print("    " + ", ".join(parts))
PY
}

disturbance() {
  python3 bench/other_cpu.py "$1" 2>/dev/null || echo 9
}

LG_TIMEOUT=200
run_cell() { # proto config scenario loadgen-args...
  local proto=$1 config=$2 name=$3; shift 3
  local attempt
  for attempt in $(seq 1 "$ATTEMPTS"); do
    if ! start_config "$config" "$proto"; then stop_all; say "    $config: servers did not start"; return 0; fi
    say "  $proto / $config / $name (attempt $attempt)"
    local out=$TMP/lg.json; : > "$out"
    local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
    if timeout "$LG_TIMEOUT" "${PIN_GEN[@]}" "$BIN/loadgen" "$@" "${LG_ARGS[@]}" --proto "$proto" \
        --label "$proto/$config/$name" --meta "config=$config" --meta "protocol=$proto" \
        --meta "scenario=$name" --meta "loadavg=$load" --meta "attempt=$attempt" \
        --max-time $((LG_TIMEOUT - 20)) >"$out" 2>>"$LOG"; then
      if grep -q '^{' "$out"; then
        grep '^{' "$out" | tail -1 >>"$RAW"
        summarize "$out" | tee -a "$LOG" >&2
      else
        say "    no result"
      fi
    else
      say "    load generator failed (exit $?)"
    fi
    stop_all
    local other; other=$(disturbance "$out")
    if python3 -c "import sys; sys.exit(0 if float('$other') <= $MAX_OTHER else 1)"; then break; fi
    [ "$attempt" -lt "$ATTEMPTS" ] && say "    disturbed: other processes used $other cores meanwhile; measuring again"
  done
  return 0
}

# 5 s of an idle three-node cluster: what heartbeats and supervisors cost in Redis.
idle_cell() { # proto
  local proto=$1
  start_config same "$proto" || { stop_all; return 0; }
  sleep 1
  python3 - "$proto" "$REDIS_PORT" "$REDIS_PID" "$PID_A" "$PID_B" "$PID_C" >>"$RAW" <<'PY' || true
import json, subprocess, sys, time
proto, port, rpid, *nodes = sys.argv[1:]
def stats():
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", port, "info", "commandstats"],
                         capture_output=True, text=True, timeout=5).stdout
    d = {}
    for l in out.splitlines():
        if l.startswith("cmdstat_"):
            name, f = l[8:].split(":", 1)
            kv = dict(x.split("=") for x in f.split(","))
            d[name] = (int(kv["calls"]), int(kv["usec"]))
    return d
def cpu(pid):
    s = open(f"/proc/{pid}/stat").read(); f = s[s.rfind(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / 100.0
names = ["redis", "nodeA", "nodeB", "nodeC"]; pids = [rpid] + nodes
c0 = [cpu(p) for p in pids]; r0 = stats(); t0 = time.monotonic()
time.sleep(5)
c1 = [cpu(p) for p in pids]; r1 = stats(); t1 = time.monotonic()
calls = {k: v[0] - r0.get(k, (0, 0))[0] for k, v in r1.items() if k != "info" and v[0] > r0.get(k, (0, 0))[0]}
print(json.dumps({"scenario": "idle", "proto": proto, "meta": {"config": "idle", "protocol": proto, "scenario": "idle"},
                  "window": {"s": round(t1 - t0, 3), "calls": calls,
                             "cpu_s": {n: round(b - a, 3) for n, a, b in zip(names, c0, c1)}}}))
PY
  stop_all
}

if [ "$MODE" = quick ]; then
  JOIN=(join --clients 1000 --room-size 4 --concurrency 100 --idle 1 --progress 0)
  CLOSED=(relay --pairs 200 --window 8 --warmup 1 --duration 3 --progress 0)
  OPEN=(relay --pairs 200 --rate 5000 --warmup 1 --duration 3 --progress 0)
else
  JOIN=(join --clients 2000 --room-size 4 --concurrency 100 --idle 1 --progress 0)
  CLOSED=(relay --pairs 200 --window 8 --warmup 2 --duration 8 --progress 0)
  OPEN=(relay --pairs 200 --rate 5000 --warmup 2 --duration 8 --progress 0)
fi

started=$(date +%s)
IFS=, read -r -a protos <<<"$PROTOCOLS"
for proto in "${protos[@]}"; do
  say "== $proto"
  idle_cell "$proto"
  for config in base single same cross; do run_cell "$proto" "$config" join "${JOIN[@]}"; done
  for config in base single same cross; do run_cell "$proto" "$config" relay-closed "${CLOSED[@]}"; done
  for config in base single same cross; do run_cell "$proto" "$config" relay-open "${OPEN[@]}"; done
done

python3 - "$RESULTS/cluster-env.json" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(( $(date +%s) - started ))" <<'PY' || true
import json, sys
p = sys.argv[1]; e = json.load(open(p))
e["loadavg at end"] = sys.argv[2]; e["measuring time (s)"] = int(sys.argv[3])
json.dump(e, open(p, "w"), ensure_ascii=False, indent=1)
PY
python3 bench/cluster-report.py "$RESULTS" && say "results: $RESULTS/cluster.md (raw: $RESULTS/cluster.jsonl, log: $RESULTS/cluster.log)"
