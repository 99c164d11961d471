#!/usr/bin/env bash
# The three-node runs behind docs/benchmarks.md: a fresh redis-server (AOF, fsync every
# second, as in production) and three RELEASE gateways on it, all on loopback, and the load
# tester spreading its sockets over the three. Gateway and Redis CPU are sampled from /proc.
# These are documented commands, not tests.
#
# Usage: loadtest/bench/three-nodes.sh [chat] [cpu] [idle] [storm] [ramp] [churn] [churn-chat]
#        (no argument: all of them, ~12 minutes on 2 cores)
# GATEWAY_WORKERS=1 gives each gateway one runtime thread (three nodes share two cores here).
# Build first: cargo build --release -p gateway -p loadtest
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
GW="${GW:-$ROOT/target/release/gateway}"
LT="${LT:-$ROOT/target/release/loadtest}"
REDIS="${REDIS_SERVER_BIN:-$(command -v redis-server)}"
OUT="${OUT:-$ROOT/target/bench}"
mkdir -p "$OUT"
export GATEWAY_JWT_SECRET="bench-secret-0123456789abcdef"
for b in "$GW" "$LT"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p gateway -p loadtest" >&2; exit 2; }
done

SITES="$OUT/sites.json"
cat > "$SITES" <<'JSON'
[{"id": "demo", "settings": {"routing": "manual"}},
 {"id": "auto", "settings": {"routing": "auto"}}]
JSON
# The runs measure the live path as before the archive existed (GATEWAY_ARCHIVE=on is a
# separate measurement), and no run inherits state kept by the one before.
BENCH_ENV=(GATEWAY_SITES="$SITES" GATEWAY_RATE_PER_SEC=1000 GATEWAY_RATE_BURST=2000 GATEWAY_STARTS_PER_IP=10000000 GATEWAY_STARTS_PER_VISITOR=100000 RUST_LOG=warn GATEWAY_ARCHIVE=off GATEWAY_KEEP_STATE=off GATEWAY_DATA_DIR="$OUT/data" ${GATEWAY_WORKERS:+GATEWAY_WORKERS=$GATEWAY_WORKERS})

PIDS=()
REDIS_PID=""
URLS=()
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_all() {
  local port dir
  port=$(free_port)
  REDIS_PORT=$port
  dir=$(mktemp -d)
  "$REDIS" --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly yes \
    --appendfsync everysec --daemonize no > "$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$port" ping >/dev/null 2>&1 || { echo "redis-server did not start" >&2; exit 2; }
  URLS=()
  PIDS=()
  for n in a b c; do
    : > "$OUT/gateway-$n.out"
    env "${BENCH_ENV[@]}" GATEWAY_LISTEN=127.0.0.1:0 GATEWAY_NODE_ID="$n" \
      GATEWAY_REDIS_URL="redis://127.0.0.1:$port" "$GW" > "$OUT/gateway-$n.out" 2>> "$OUT/gateway-$n.err" &
    PIDS+=($!)
    for _ in $(seq 100); do
      addr=$(sed -n 's#^listening on http://##p' "$OUT/gateway-$n.out")
      if [ -n "$addr" ]; then URLS+=(--url "ws://$addr/v1/ws"); break; fi
      sleep 0.1
    done
    [ "${#URLS[@]}" -eq "$(( ${#PIDS[@]} * 2 ))" ] || { echo "gateway $n did not start" >&2; exit 2; }
  done
}
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$REDIS_PID" ] && { kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; }
  PIDS=(); REDIS_PID=""
}
trap stop_all EXIT

run() {
  local name=$1; shift
  start_all
  local probes=(--redis-pid "$REDIS_PID")
  for p in "${PIDS[@]}"; do probes+=(--gateway-pid "$p"); done
  echo "== $name: loadtest ${URLS[*]} $*  ($(cut -d' ' -f1-3 /proc/loadavg) load)" | tee "$OUT/$name.cmd"
  "$LT" --quiet "${URLS[@]}" "${probes[@]}" --json "$OUT/$name.json" "$@" \
    | tee "$OUT/$name.txt" || true
  # What Redis ran, command by command (calls, µs per call), for the cost of the cross-node path.
  redis-cli -p "$REDIS_PORT" info commandstats > "$OUT/$name.redis-commands" 2>/dev/null || true
  stop_all
}

CHAT=(--site auto --duration 20s --drain 2s --connect-rate 500)
all=(chat cpu idle storm ramp churn churn-chat)
for what in "${@:-${all[@]}}"; do
  case "$what" in
    chat)
      # Messages/s count both directions: visitors send --rate, operators answer each.
      for total in ${CHAT_RATES:-1000 5000 10000}; do
        run "redis3-chat-$total" "${CHAT[@]}" chat --visitors 2000 --operators 99 --rate $((total / 2))
      done ;;
    cpu)
      for v in 1000 5000; do
        run "redis3-cpu-conns-$v" "${CHAT[@]}" chat --visitors "$v" --operators 99 --rate 500
      done ;;
    idle)
      # 5,000 sockets per node, 15,000 in all: memory per socket with the Redis engine.
      run redis3-idle-15k --duration 5s --connect-rate 1000 idle --sockets 15000 --settle 3s ;;
    storm)
      run redis3-storm-10k --site auto --connect-rate 500 --duration 60s --op-pace 200 --max-lost 0 \
        --max-dup 0 reconnect-storm --visitors 10000 --operators 99 --missed 1 ;;
    ramp)
      # New sessions per second until a step fails or its connect + welcome p99 passes 100 ms
      # (or 36,000 sockets are open: 12,000 per node, two load-tester processes).
      run redis3-ramp --workers 2 --source-ips 127.0.0.2,127.0.0.3 --duration 60s \
        ramp --start-rate 1000 --step 1000 --step-duration 1s --max-sockets 36000 ;;
    churn|churn-chat)
      # As one-node.sh's churn: arrivals rising by 1,000/s every second, each visitor leaving
      # 1 s after its welcome; in churn-chat a fifth start a conversation and close it.
      share=0; [ "$what" = churn-chat ] && share=0.2
      run "redis3-$what" --workers 2 --source-ips 127.0.0.2,127.0.0.3 --duration 40s \
        ramp --start-rate 1000 --step 1000 --step-duration 1s --max-sockets 1000000 --stay 1s \
        --chatting "$share" ;;
    *) echo "unknown benchmark: $what" >&2; exit 2 ;;
  esac
done
