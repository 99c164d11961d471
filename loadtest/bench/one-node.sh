#!/usr/bin/env bash
# The heavy one-node runs behind docs/benchmarks.md: each starts a fresh RELEASE gateway
# (in-memory engine) on a free loopback port, runs the load tester against it, and keeps the
# JSON report in $OUT (default target/bench). These are documented commands, not tests.
#
# Usage: loadtest/bench/one-node.sh [idle-10k] [idle-max] [chat] [chat-max] [cpu-conns] [storm] [ramp] [churn] [churn-chat] [archive]
#        (no argument: all of them, ~17 minutes on 2 cores)
# Build first: cargo build --release -p gateway -p loadtest
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
GW="${GW:-$ROOT/target/release/gateway}"
LT="${LT:-$ROOT/target/release/loadtest}"
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
BENCH_ENV=(GATEWAY_SITES="$SITES" GATEWAY_RATE_PER_SEC=1000 GATEWAY_RATE_BURST=2000 GATEWAY_STARTS_PER_IP=10000000 GATEWAY_STARTS_PER_VISITOR=100000 RUST_LOG=warn GATEWAY_ARCHIVE=off GATEWAY_KEEP_STATE=off GATEWAY_DATA_DIR="$OUT/data")

GW_PID=""
URL=""
EXTRA_ENV=()   # set by a scenario for the gateways it starts
start_gw() {
  : > "$OUT/gateway.out"
  rm -rf "$OUT/data"
  env "${BENCH_ENV[@]}" "${EXTRA_ENV[@]}" GATEWAY_LISTEN=127.0.0.1:0 "$GW" > "$OUT/gateway.out" 2>> "$OUT/gateway.err" &
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

# archived COUNT_CMD: after a run, polls the archive's message count until it stops growing;
# prints the count and how long after the load tester's end the archive held it.
archived() {
  local count last=-1 end
  end=$(date +%s%N)
  while :; do
    count=$("$@")
    if [ "$count" = "$last" ]; then break; fi
    last=$count
    sleep 1
  done
  # The last poll only confirmed: the count was reached one second before it.
  echo "archived $count messages; the archive held them $(( ($(date +%s%N) - end) / 1000000 - 1000 )) ms after the load ended"
}

# A PostgreSQL of its own for the archive runs: initdb in $OUT/pg, a free port, no auth.
PG_DIR="$OUT/pg"
PG_CTL=""
start_pg() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_CTL="$bin/pg_ctl"
  rm -rf "$PG_DIR"
  mkdir -p "$PG_DIR"
  # PostgreSQL refuses to run as root: then it runs as the package's `postgres` user.
  local as=()
  if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DIR"; as=(runuser -u postgres --); fi
  PG_AS=("${as[@]}")
  "${as[@]}" "$bin/initdb" -D "$PG_DIR" -U bench -A trust > "$OUT/pg.log"
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${as[@]}" "$PG_CTL" -D "$PG_DIR" -l "$PG_DIR/server.log" -w start \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=on" > /dev/null
  PG_URL="postgres://bench@127.0.0.1:$PG_PORT/postgres"
}
PG_AS=()
stop_pg() { [ -z "$PG_CTL" ] || "${PG_AS[@]}" "$PG_CTL" -D "$PG_DIR" -m fast stop > /dev/null 2>&1 || true; }

# run_archived NAME COUNT_CMD -- ARGS...: like run, and waits for the archive to hold every
# message before the gateway stops.
run_archived() {
  local name=$1; shift
  local count_cmd=()
  while [ "$1" != "--" ]; do count_cmd+=("$1"); shift; done
  shift
  start_gw
  echo "== $name: ${EXTRA_ENV[*]} loadtest --url $URL --gateway-pid <gateway> $*  ($(cut -d' ' -f1-3 /proc/loadavg) load)" \
    | tee "$OUT/$name.cmd"
  "$LT" --quiet --url "$URL" --gateway-pid "$GW_PID" --json "$OUT/$name.json" "$@" \
    | tee "$OUT/$name.txt" || true
  archived "${count_cmd[@]}" | tee -a "$OUT/$name.txt"
  stop_gw
}
sqlite_count() { sqlite3 "$OUT/data/archive.db" 'SELECT count(*) FROM messages' 2>/dev/null || echo 0; }
pg_count() { psql -qtA "$PG_URL" -c 'SELECT count(*) FROM messages' 2>/dev/null || echo 0; }

all=(idle-10k idle-max chat chat-max cpu-conns storm ramp churn churn-chat archive)
for what in "${@:-${all[@]}}"; do
  case "$what" in
    idle-10k) run idle-10k --duration 5s idle --sockets 10000 --settle 3s ;;
    idle-max) run idle-19k "${MANY[@]}" --duration 5s idle --sockets 19000 --settle 3s ;;
    chat)
      # Messages/s count both directions: visitors send --rate, operators answer each.
      for total in ${CHAT_RATES:-1000 5000 10000}; do
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
    churn|churn-chat)
      # Visitors arrive at a rising rate and each leaves 1 s after its welcome (so about
      # rate x 1 s sockets are held); in churn-chat a fifth start a conversation and close it
      # as they leave. Stops at the step whose failures or p99 (100 ms) break.
      share=0; [ "$what" = churn-chat ] && share=0.2
      run "$what" "${MANY[@]}" --duration 40s ramp --start-rate 1000 --step 1000 --step-duration 1s \
        --max-sockets 1000000 --stay 1s --chatting "$share" ;;
    storm)
      run storm-10k --site auto --connect-rate 500 --duration 60s --op-pace 200 --max-lost 0 --max-dup 0 \
        reconnect-storm --visitors 10000 --operators 100 --missed 1 ;;
    archive)
      # The same 5,000 messages/s chat with the archive on: SQLite in the data dir, then a
      # PostgreSQL of its own. CPU per message against chat-5000 (archive off) is the cost.
      EXTRA_ENV=(GATEWAY_ARCHIVE=on)
      run_archived archive-sqlite-5000 sqlite_count -- "${CHAT[@]}" chat --visitors 2000 --operators 100 --rate 2500
      start_pg
      trap 'stop_gw; stop_pg' EXIT
      EXTRA_ENV=(GATEWAY_ARCHIVE=on GATEWAY_DATABASE_URL="$PG_URL")
      run_archived archive-postgres-5000 pg_count -- "${CHAT[@]}" chat --visitors 2000 --operators 100 --rate 2500
      stop_pg
      EXTRA_ENV=() ;;
    *) echo "unknown benchmark: $what" >&2; exit 2 ;;
  esac
done
