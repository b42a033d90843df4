#!/usr/bin/env bash
# Java SDK (com.microsoft:durabletask-client) end-to-end tests against the sidecar.
#
# Starts the sidecar on a free port with a temporary SQLite file, runs `mvn -B -q test`
# in this directory, stops the sidecar and exits with Maven's status.
#
#   SIDECAR_BIN    sidecar binary (default: ../../target/debug/durabletask-sidecar,
#                  relative to this directory)
#   JAVA_ENTITIES  1 = also run the entity tests (sidecar entity support required)
#   MVN            Maven command (default: mvn)
#   SIDECAR_LOG_LEVEL  sidecar --log-level (default: warn)
#   SIDECAR_LOG    file for the sidecar's log (default: a temp file, tail shown on failure)
# Extra arguments go to Maven, e.g. ./run.sh -Dtest=LifecycleTest
#                                   ./run.sh -Dmaven.repo.local=/tmp/m2
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

bin="${SIDECAR_BIN:-../../target/debug/durabletask-sidecar}"
case "$bin" in /*) ;; *) bin="$here/$bin" ;; esac
if [ ! -x "$bin" ]; then
    echo "run.sh: sidecar binary not found or not executable: $bin (set SIDECAR_BIN)" >&2
    exit 2
fi
mvn_cmd="${MVN:-mvn}"

work="$(mktemp -d "${TMPDIR:-/tmp}/dts-java-e2e.XXXXXX")"
log="${SIDECAR_LOG:-$work/sidecar.log}"
sidecar_pid=""
cleanup() {
    if [ -n "$sidecar_pid" ] && kill -0 "$sidecar_pid" 2>/dev/null; then
        kill -TERM "$sidecar_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$sidecar_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$sidecar_pid" 2>/dev/null || true
        wait "$sidecar_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local p
    while :; do
        p=$(( 20000 + RANDOM % 40000 ))
        port_in_use "$p" || { echo "$p"; return; }
    done
}

# Start the sidecar; retry with another port if it loses a race for the port.
port=""
for attempt in 1 2 3; do
    candidate="$(free_port)"
    "$bin" --port "$candidate" --http-port 0 --db "$work/sidecar-$attempt.sqlite" --log-level "${SIDECAR_LOG_LEVEL:-warn}" \
        >"$log" 2>&1 &
    sidecar_pid=$!
    for _ in $(seq 1 100); do
        if ! kill -0 "$sidecar_pid" 2>/dev/null; then break; fi
        if port_in_use "$candidate"; then port="$candidate"; break; fi
        sleep 0.1
    done
    [ -n "$port" ] && break
    echo "run.sh: sidecar did not come up on port $candidate (attempt $attempt):" >&2
    cat "$log" >&2 || true
    kill -KILL "$sidecar_pid" 2>/dev/null || true
    wait "$sidecar_pid" 2>/dev/null || true
    sidecar_pid=""
done
if [ -z "$port" ]; then
    echo "run.sh: could not start the sidecar" >&2
    exit 2
fi
echo "java e2e: sidecar $bin on 127.0.0.1:$port (db $work)"

entities=false
if [ "${JAVA_ENTITIES:-0}" = "1" ]; then entities=true; fi

rm -rf target/surefire-reports
start=$(date +%s)
set +e
SIDECAR_PORT="$port" "$mvn_cmd" -B -q -ntp -Dstyle.color=never \
    -Dsidecar.port="$port" -Dentities="$entities" \
    -Dsurefire.useFile=false -DtrimStackTrace=false \
    "$@" test 2>&1 | sed -u 's/\x1b\[0m//g'   # Debian's Maven prints colour resets even with -B
status=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - start ))

# Summary line from the surefire XML reports (Maven itself is quiet with -q).
tests=0 failures=0 errors=0 skipped=0
shopt -s nullglob
for f in target/surefire-reports/TEST-*.xml; do
    line="$(grep -m1 -o '<testsuite [^>]*>' "$f" || true)"
    for k in tests failures errors skipped; do
        v="$(sed -n "s/.* $k=\"\([0-9]*\)\".*/\1/p" <<<"$line")"
        declare "$k=$(( ${!k} + ${v:-0} ))"
    done
done
passed=$(( tests - failures - errors - skipped ))
echo "java e2e: maven took ${elapsed}s"
echo "java-e2e: $passed passed, $(( failures + errors )) failed, $skipped skipped"

if ! kill -0 "$sidecar_pid" 2>/dev/null; then
    echo "run.sh: the sidecar died during the tests" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    for f in target/surefire-reports/*-output.txt; do
        echo "--- SDK/test output: $(basename "$f") (last 40 lines) ---" >&2
        tail -n 40 "$f" >&2
    done
    echo "--- sidecar log (last 100 lines) ---" >&2
    tail -n 100 "$log" >&2 || true
fi
exit "$status"
