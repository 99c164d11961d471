#!/usr/bin/env bash
# The heavy one-node runs behind docs/benchmarks.md: each starts a fresh RELEASE gateway
# (in-memory engine) on a free loopback port, runs the load tester against it, and keeps the
# JSON report in $OUT (default target/bench). These are documented commands, not tests.
#
# Usage: loadtest/bench/one-node.sh [idle-10k] [idle-max] [chat] [chat-max] [cpu-conns] [storm] [ramp]
#        (no argument: all of them, ~15 minutes on 2 cores)
# Build first: cargo build --release -p gateway -p loadtest
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
GW="$ROOT/target/release/gateway"
LT="$ROOT/target/release/loadtest"
OUT="${OUT:-$ROOT/target/bench}"
mkdir -p "$OUT"
export GATEWAY_JWT_SECRET="bench-secret-0123456789abcdef"
for b in "$GW" "$LT"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p gateway -p loadtest" >&2; exit 2; }
done

# Benchmarks raise the per-connection rate limit: one operator answers many visitors, far
# more than a person's 20 frames/s. Everything else is the gateway's default.
SITES="$OUT/sites.json"
cat > "$SITES" <<'JSON'
[{"id": "demo", "settings": {"routing": "manual"}},
 {"id": "auto", "settings": {"routing": "auto"}}]
JSON
# The runs measure the live path as before the archive existed (GATEWAY_ARCHIVE=on is a
# separate measurement), and no run inherits state kept by the one before.
BENCH_ENV=(GATEWAY_SITES="$SITES" GATEWAY_RATE_PER_SEC=1000 GATEWAY_RATE_BURST=2000 RUST_LOG=warn GATEWAY_ARCHIVE=off GATEWAY_KEEP_STATE=off GATEWAY_DATA_DIR="$OUT/data")

GW_PID=""
URL=""
start_gw() {
  : > "$OUT/gateway.out"
  env "${BENCH_ENV[@]}" GATEWAY_LISTEN=127.0.0.1:0 "$GW" > "$OUT/gateway.out" 2>> "$OUT/gateway.err" &
  GW_PID=$!
  for _ in $(seq 100); do
    addr=$(sed -n 's#^listening on http://##p' "$OUT/gateway.out")
    if [ -n "$addr" ]; then URL="ws://$addr/v1/ws"; return; fi
    sleep 0.1
  done
  echo "gateway did not start" >&2; exit 2
}
stop_gw() { kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; }
trap stop_gw EXIT

# run NAME ARGS...: one load test against a fresh gateway, report in $OUT/NAME.json.
run() {
  local name=$1; shift
  start_gw
  # The cores are shared: note how busy the machine was when the run started.
  echo "== $name: loadtest --url $URL --gateway-pid <gateway> $*  ($(cut -d' ' -f1-3 /proc/loadavg) load)" \
    | tee "$OUT/$name.cmd"
  "$LT" --quiet --url "$URL" --gateway-pid "$GW_PID" --json "$OUT/$name.json" "$@" \
    | tee "$OUT/$name.txt" || true   # a failed threshold (exit 1) is a result too
  stop_gw
}

# The two source addresses and two worker processes that sockets past ~19k per process need.
MANY=(--workers 2 --source-ips 127.0.0.2,127.0.0.3)
# Auto routing: in manual and offer routing every start sends every operator the queue's
# listing (up to 100 conversations), which at these setup rates overflows operators'
# outbound budget (4008). 500 new sessions/s is what one node sustained here while the
# load tester shares its two cores (see the ramp); faster setups time out on welcome.
CHAT=(--site auto --duration 20s --drain 2s --connect-rate 500)

all=(idle-10k idle-max chat chat-max cpu-conns storm ramp)
for what in "${@:-${all[@]}}"; do
  case "$what" in
    idle-10k) run idle-10k --duration 5s idle --sockets 10000 --settle 3s ;;
    idle-max) run idle-19k "${MANY[@]}" --duration 5s idle --sockets 19000 --settle 3s ;;
    chat)
      # Messages/s count both directions: visitors send --rate, operators answer each.
      for total in 1000 5000 10000; do
        run "chat-$total" "${CHAT[@]}" chat --visitors 2000 --operators 100 --rate $((total / 2))
      done ;;
    chat-max)
      for total in ${CHAT_MAX_RATES:-2000 4000 6000 8000 10000 12000 15000 20000}; do
        run "chat-max-$total" "${CHAT[@]}" --max-p99 10ms chat --visitors 2000 --operators 100 \
          --rate $((total / 2))
      done ;;
    cpu-conns)
      for v in 1000 5000 10000; do
        run "cpu-conns-$v" "${CHAT[@]}" chat --visitors "$v" --operators 100 --rate 500
      done
      run cpu-conns-19000 "${MANY[@]}" "${CHAT[@]}" chat --visitors 18900 --operators 100 --rate 500 ;;
    ramp)
      run ramp "${MANY[@]}" --duration 60s ramp --start-rate 1000 --step 1000 --step-duration 1s \
        --max-sockets 19900 ;;
    storm)
      run storm-10k --site auto --connect-rate 500 --duration 60s --op-pace 200 --max-lost 0 --max-dup 0 \
        reconnect-storm --visitors 10000 --operators 100 --missed 1 ;;
    *) echo "unknown benchmark: $what" >&2; exit 2 ;;
  esac
done
