# Sourced by the Node suites' run.sh (tests/js, tests/dapr_js, tests/dashboard): one sidecar for the
# whole run, on free loopback ports with a fresh SQLite file in a temporary directory,
# stopped on exit (its log printed when the run failed).
#
#   sidecar_start [http]   starts "$SIDECAR_BIN"; sets PORT (and HTTP_PORT with "http",
#                          else the HTTP API is off), SIDECAR_PID, TMP, DB, LOG
#   sidecar_alive          whether it is still running
#   KEEP_DB=1              keep the temporary directory
# The caller sets `set -euo pipefail` and sources this from its own directory (tests/<suite>),
# before its npm ci so a missing binary fails first; node must be on PATH.
#   SIDECAR_BIN            the binary (default: target/debug/durabletask-sidecar), made
#                          absolute and exported: test files that start a sidecar of their
#                          own read it

SIDECAR_BIN="${SIDECAR_BIN:-../../target/debug/durabletask-sidecar}"
if [[ ! -x "$SIDECAR_BIN" ]]; then
  echo "run.sh: sidecar binary not found or not executable: $SIDECAR_BIN (run cargo build, or set SIDECAR_BIN)" >&2
  exit 2
fi
SIDECAR_BIN="$(cd "$(dirname "$SIDECAR_BIN")" && pwd)/$(basename "$SIDECAR_BIN")"
export SIDECAR_BIN

TMP="$(mktemp -d -t dts-e2e.XXXXXX)"
DB="$TMP/sidecar.sqlite"
LOG="$TMP/sidecar.log"
SIDECAR_PID=""

sidecar_cleanup() {
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
trap sidecar_cleanup EXIT
trap 'exit 130' INT TERM

# The sidecar does not print the ports it chose for port 0, so pick free ones here (and
# retry in case another process takes one in between).
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

sidecar_alive() {
  kill -0 "$SIDECAR_PID" 2>/dev/null
}

sidecar_ports_up() {
  port_open "$PORT" && { [[ "$HTTP_PORT" == off ]] || port_open "$HTTP_PORT"; }
}

sidecar_start() {
  local with_http="${1:-}" attempt
  for attempt in 1 2 3; do
    PORT="$(free_port)"
    HTTP_PORT=off
    if [[ "$with_http" == "http" ]]; then HTTP_PORT="$(free_port)"; fi
    echo "== starting sidecar: gRPC 127.0.0.1:$PORT, HTTP $HTTP_PORT (db $DB)"
    "$SIDECAR_BIN" --port "$PORT" --http-port "$HTTP_PORT" --db "$DB" --log-level warn >>"$LOG" 2>&1 &
    SIDECAR_PID=$!
    for _ in $(seq 1 100); do
      if sidecar_ports_up; then break; fi
      sidecar_alive || break
      sleep 0.1
    done
    if sidecar_alive && sidecar_ports_up; then
      return 0
    fi
    echo "run.sh: sidecar did not come up (attempt $attempt)" >&2
    kill "$SIDECAR_PID" 2>/dev/null || true
    wait "$SIDECAR_PID" 2>/dev/null || true
    SIDECAR_PID=""
  done
  return 1
}
