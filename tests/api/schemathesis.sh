#!/usr/bin/env bash
# The HTTP API against its own OpenAPI description: schemathesis generates requests for every
# operation (valid and not) and checks that no answer is a 5xx and every answer matches its
# schema (the checks the issue asks for: no 5xx, the declared status codes, content types,
# headers and bodies; not yet whether every schema-valid request is accepted). The gateway under test is the real binary on a free port of 127.0.0.1, with its own
# data dir (SQLite archive) and a root key holding every scope.
#
# Usage: tests/api/schemathesis.sh <schemathesis binary>   (GATEWAY_BIN: the gateway binary)
set -euo pipefail
ST=${1:?usage: schemathesis.sh <schemathesis binary>}
BIN=${GATEWAY_BIN:?GATEWAY_BIN is required}
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export GATEWAY_DATA_DIR=$DATA GATEWAY_LISTEN=127.0.0.1:$PORT GATEWAY_JWT_SECRET=schemathesis-secret-0123456789 \
  GATEWAY_API_RATE_PER_SEC=100000 GATEWAY_API_RATE_BURST=100000 GATEWAY_KEEP_STATE=off RUST_LOG=warn \
  GATEWAY_WEBHOOK_HOSTS=127.0.0.1
KEY=$("$BIN" api-key create --root --scope read,admin,bot,tokens --name schemathesis 2>/dev/null)
"$BIN" >"$DATA/gateway.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/readyz', timeout=1)" 2>/dev/null; then break; fi
  sleep 0.1
done
"$ST" --config-file "$(dirname "$0")/schemathesis.toml" run "http://127.0.0.1:$PORT/v1/openapi.json" \
  --url "http://127.0.0.1:$PORT" \
  -H "Authorization: Bearer $KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" \
  --request-timeout 10 \
  --no-color || { echo "---- gateway log ----"; tail -50 "$DATA/gateway.log"; exit 1; }
