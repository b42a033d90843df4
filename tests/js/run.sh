#!/usr/bin/env bash
# End-to-end tests of the sidecar with the JavaScript SDK (@microsoft/durabletask-js).
#
# Usage: tests/js/run.sh [test files...]   (default: every *.test.mjs)
#   SIDECAR_BIN   sidecar binary (default: ../../target/debug/durabletask-sidecar, relative to tests/js)
#   DTS_SDK_LOG=1 print the SDK's own logging
#   KEEP_DB=1     keep the temp directory with the SQLite file and sidecar log
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

SIDECAR_BIN="${SIDECAR_BIN:-../../target/debug/durabletask-sidecar}"
if [[ ! -x "$SIDECAR_BIN" ]]; then
  echo "run.sh: sidecar binary not found or not executable: $SIDECAR_BIN (set SIDECAR_BIN)" >&2
  exit 2
fi
SIDECAR_BIN="$(cd "$(dirname "$SIDECAR_BIN")" && pwd)/$(basename "$SIDECAR_BIN")"
export SIDECAR_BIN  # durability.test.mjs starts (and kills) its own sidecar with it

# The SDK's package.json says engines.node >= 22, but 0.4.0 works on Node 20 (what this machine
# has); node:test and --test-concurrency need >= 20.10.
command -v node >/dev/null || { echo "run.sh: node (>= 20) is required" >&2; exit 2; }
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if (( NODE_MAJOR < 20 )); then
  echo "run.sh: node >= 20 required (found $(node --version))" >&2
  exit 2
fi

echo "== npm ci"
npm ci --no-audit --no-fund --engine-strict=false --loglevel=error

TMP="$(mktemp -d -t dts-js-e2e.XXXXXX)"
DB="$TMP/sidecar.sqlite"
LOG="$TMP/sidecar.log"
SIDECAR_PID=""

cleanup() {
  local rc=$?
  if [[ -n "$SIDECAR_PID" ]] && kill -0 "$SIDECAR_PID" 2>/dev/null; then
    kill "$SIDECAR_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SIDECAR_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SIDECAR_PID" 2>/dev/null || true
    wait "$SIDECAR_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -s "$LOG" ]]; then
    echo "== sidecar log (last 100 lines)" >&2
    tail -n 100 "$LOG" >&2 || true
  fi
  if [[ "${KEEP_DB:-0}" == "1" ]]; then
    echo "run.sh: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --port 0 works but the chosen port is not printed, so pick a free one ourselves
# (and retry a few times in case another process grabs it in between).
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

for attempt in 1 2 3; do
  PORT="$(free_port)"
  echo "== starting sidecar on 127.0.0.1:$PORT (db $DB)"
  "$SIDECAR_BIN" --port "$PORT" --http-port 0 --db "$DB" --log-level warn >>"$LOG" 2>&1 &
  SIDECAR_PID=$!
  for _ in $(seq 1 100); do
    if port_open "$PORT"; then break; fi
    kill -0 "$SIDECAR_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SIDECAR_PID" 2>/dev/null && port_open "$PORT"; then
    break
  fi
  echo "run.sh: sidecar did not come up (attempt $attempt)" >&2
  kill "$SIDECAR_PID" 2>/dev/null || true
  wait "$SIDECAR_PID" 2>/dev/null || true
  SIDECAR_PID=""
  if [[ $attempt == 3 ]]; then exit 1; fi
done

export DTS_ADDR="localhost:$PORT"

if (( $# > 0 )); then
  FILES=("$@")   # explicit test files, e.g. ./run.sh durability.test.mjs
else
  FILES=(orchestrations.test.mjs durability.test.mjs entities.test.mjs)
fi

echo "== node --test ${FILES[*]}"
# --test-concurrency=1: the files share one sidecar, and a worker of one file would take (and
# fail as "not registered") the other file's work items if they ran at the same time.
set +e
node --test --test-concurrency=1 --test-reporter=spec --test-timeout=90000 "${FILES[@]}"
RC=$?
set -e

if ! kill -0 "$SIDECAR_PID" 2>/dev/null; then
  echo "run.sh: the sidecar exited during the tests" >&2
  RC=1
fi
# (on failure the EXIT trap prints the sidecar's log; on success nothing is printed after the
# runner's summary so CI can read its closing lines)
exit $RC
