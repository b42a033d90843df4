#!/usr/bin/env bash
# Property-based test of the HTTP API: schemathesis generates requests from the sidecar's
# own /openapi.json and checks every response against it (documented status, headers,
# content type, body schema) and that no request gets a 5xx - the one documented 500 is
# a Failed instance with returnInternalServerErrorOnFailure=true, which nothing here runs.
# Bounded: a few examples per operation, a throw-away in-memory database.
#   SIDECAR_BIN        sidecar binary (default: target/debug, then target/release)
#   SCHEMATHESIS_VENV  virtualenv to create/use (default: <repo>/.venv-schemathesis)
#   MAX_EXAMPLES       examples per operation (default 25)
# Extra arguments are passed to `schemathesis run`.
#
# One check is left out: positive_data_acceptance expects every schema-valid request to
# succeed, but whether raise/terminate/suspend/rewind/restart/purge succeed depends on
# the instance's state (410 and 412 are documented answers, not failures).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SCHEMATHESIS_VENV:-$root/.venv-schemathesis}"

# shellcheck source=tests/pysuite.sh
. "$root/tests/pysuite.sh"
bin="$(sidecar_bin "$root")"
python_venv "$venv" "$here/requirements.txt"
py="$venv/bin/python"

free_port() {
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
log="$(mktemp "${TMPDIR:-/tmp}/schemathesis-sidecar.XXXXXX.log")"
port="$(free_port)"
http_port="$(free_port)"
# Waits (?timeout=) are capped by --max-wait-seconds, so generated huge timeouts end
# well within schemathesis' request timeout.
"$bin" --host 127.0.0.1 --port "$port" --http-port "$http_port" --db :memory: \
    --max-wait-seconds 2 --log-level warn >"$log" 2>&1 &
sidecar_pid=$!
trap 'kill -TERM "$sidecar_pid" 2>/dev/null || true; wait "$sidecar_pid" 2>/dev/null || true; rm -f "$log"' EXIT

base="http://127.0.0.1:$http_port"
for _ in $(seq 1 100); do
    if "$py" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$base/openapi.json" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

set +e
"$venv/bin/schemathesis" run "$base/openapi.json" \
    --checks all --exclude-checks positive_data_acceptance \
    --max-examples "${MAX_EXAMPLES:-25}" --request-timeout 10 --no-color "$@"
status=$?
set -e
if [ $status -ne 0 ]; then
    echo "----- last 40 lines of the sidecar log -----" >&2
    tail -n 40 "$log" >&2 || true
fi
exit $status
