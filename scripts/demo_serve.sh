#!/usr/bin/env bash
# The serving half of `make demo`: serve the exported model, classify the sample photos through
# the CLI over REST and gRPC, run a short Locust benchmark, say where the report is, stop.
#
# Usage: scripts/demo_serve.sh [MODEL_BASE_PATH]         (default models/lenet5)
# Environment: PYTHON (default .venv/bin/python), MNIST_DIR (the benchmark sends MNIST test
# digits), BENCH_OUT (default reports/bench), BENCH_USERS (default 1,4,16), BENCH_SECONDS
# (default 8 per protocol and level), BENCH_WORKERS (Locust worker processes, default 1).
# The server listens on 127.0.0.1 only, on TF Serving's ports (from the contract package).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
MODEL_BASE_PATH=${1:-$("$PYTHON" -c 'import contract; print(contract.DEFAULT_MODEL_BASE_PATH)')}
BENCH_OUT=${BENCH_OUT:-reports/bench}
BENCH_USERS=${BENCH_USERS:-1,4,16}
BENCH_SECONDS=${BENCH_SECONDS:-8}
BENCH_WORKERS=${BENCH_WORKERS:-1}
READY_TIMEOUT_S=90

read -r MODEL_NAME GRPC_PORT REST_PORT < <(
  "$PYTHON" -c 'import contract as c; print(c.MODEL_NAME, c.GRPC_PORT, c.REST_PORT)'
)
REST_URL="http://127.0.0.1:${REST_PORT}"
GRPC_TARGET="127.0.0.1:${GRPC_PORT}"
mkdir -p "$BENCH_OUT"
SERVER_LOG="$BENCH_OUT/server.log"

echo "== serving $MODEL_BASE_PATH: REST $REST_URL, gRPC $GRPC_TARGET (log: $SERVER_LOG)"
"$PYTHON" -m serving --model_name "$MODEL_NAME" --model_base_path "$MODEL_BASE_PATH" \
  --host 127.0.0.1 --port "$GRPC_PORT" --rest_api_port "$REST_PORT" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

stop_server() {
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "== stopping the server (SIGTERM, pid $SERVER_PID)"
    kill -TERM "$SERVER_PID"
    for _ in $(seq 1 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap stop_server EXIT

# Ready when `status` exits 0 over both protocols (a model version is AVAILABLE).
deadline=$((SECONDS + READY_TIMEOUT_S))
until "$PYTHON" -m client status --rest "$REST_URL" --timeout 2 >/dev/null 2>&1 \
  && "$PYTHON" -m client status --grpc "$GRPC_TARGET" --timeout 2 >/dev/null 2>&1; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "error: the server exited; its log:" >&2; tail -n 30 "$SERVER_LOG" >&2; exit 1
  fi
  if ((SECONDS > deadline)); then
    echo "error: the server was not ready within ${READY_TIMEOUT_S}s" >&2; tail -n 30 "$SERVER_LOG" >&2; exit 1
  fi
  sleep 0.5
done
"$PYTHON" -m client status --grpc "$GRPC_TARGET"

echo "== classifying the sample photos (client/samples: file names carry the true digit)"
echo "-- over REST"
"$PYTHON" -m client predict client/samples/* --rest "$REST_URL"
echo "-- over gRPC"
"$PYTHON" -m client predict client/samples/* --grpc "$GRPC_TARGET"
echo "-- MNIST test digits 0-9 straight from the IDX files, over gRPC"
"$PYTHON" -m client predict mnist:t10k:0-9 --grpc "$GRPC_TARGET"

echo "== benchmark: users ${BENCH_USERS}, ${BENCH_SECONDS}s each, REST then gRPC"
"$PYTHON" -m loadtest --rest "$REST_URL" --grpc "$GRPC_TARGET" \
  --users "$BENCH_USERS" --duration "$BENCH_SECONDS" --workers "$BENCH_WORKERS" \
  --server-pid "$SERVER_PID" --out "$BENCH_OUT"

echo "== done: report $BENCH_OUT/report.md (and .csv), plot $BENCH_OUT/latency.png, Locust's own CSV/HTML in $BENCH_OUT/locust/"
