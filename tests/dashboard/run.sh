#!/usr/bin/env bash
# Browser tests of the dashboard: Playwright (playwright-core from npm) driving Debian's
# Chromium against the debug sidecar (fresh SQLite file, ephemeral ports) with a real
# @microsoft/durabletask-js worker. Saves screenshots to docs/screenshots/.
#
# Usage: tests/dashboard/run.sh
#   SIDECAR_BIN   sidecar binary (default: target/debug/durabletask-sidecar, built by `cargo build`)
#   CHROMIUM      browser binary (default: chromium on PATH)
#   HEADED=1      show the browser window
#   KEEP_DB=1     keep the temp directory with the SQLite file and sidecar log
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

SIDECAR_BIN="${SIDECAR_BIN:-../../target/debug/durabletask-sidecar}"
if [[ ! -x "$SIDECAR_BIN" ]]; then
  echo "run.sh: sidecar binary not found or not executable: $SIDECAR_BIN (run cargo build, or set SIDECAR_BIN)" >&2
  exit 2
fi
CHROMIUM="${CHROMIUM:-$(command -v chromium || true)}"
if [[ -z "$CHROMIUM" ]]; then
  echo "run.sh: chromium is required (apt-get install chromium, or set CHROMIUM)" >&2
  exit 2
fi
export CHROMIUM
command -v node >/dev/null || { echo "run.sh: node (>= 20) is required" >&2; exit 2; }

echo "== npm ci"
# engine-strict off: the SDK's package.json says node >= 22, 0.4.0 works on 20 (see tests/js).
npm ci --no-audit --no-fund --engine-strict=false --loglevel=error

TMP="$(mktemp -d -t dts-dashboard.XXXXXX)"
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

# The sidecar does not print the ports it chose for --port 0, so pick free ones here (and
# retry in case another process takes one in between).
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

for attempt in 1 2 3; do
  PORT="$(free_port)"
  HTTP_PORT="$(free_port)"
  echo "== starting sidecar: gRPC 127.0.0.1:$PORT, HTTP 127.0.0.1:$HTTP_PORT (db $DB)"
  "$SIDECAR_BIN" --port "$PORT" --http-port "$HTTP_PORT" --db "$DB" --log-level warn >>"$LOG" 2>&1 &
  SIDECAR_PID=$!
  for _ in $(seq 1 100); do
    if port_open "$PORT" && port_open "$HTTP_PORT"; then break; fi
    kill -0 "$SIDECAR_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SIDECAR_PID" 2>/dev/null && port_open "$PORT" && port_open "$HTTP_PORT"; then
    break
  fi
  echo "run.sh: sidecar did not come up (attempt $attempt)" >&2
  kill "$SIDECAR_PID" 2>/dev/null || true
  wait "$SIDECAR_PID" 2>/dev/null || true
  SIDECAR_PID=""
  if [[ $attempt == 3 ]]; then exit 1; fi
done

export DTS_ADDR="localhost:$PORT"
export DASHBOARD_URL="http://127.0.0.1:$HTTP_PORT"
export SCREENSHOT_DIR="$HERE/../../docs/screenshots"

echo "== node --test dashboard.test.mjs"
set +e
node --test --test-concurrency=1 --test-reporter=spec --test-timeout=120000 dashboard.test.mjs
RC=$?
set -e
if ! kill -0 "$SIDECAR_PID" 2>/dev/null; then
  echo "run.sh: the sidecar exited during the tests" >&2
  RC=1
fi
exit $RC
