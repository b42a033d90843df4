#!/usr/bin/env bash
# End-to-end tests with a real Dapr Workflow SDK (durabletask-dapr, Python) against the
# sidecar binary: starts the binary on a free port with a throw-away SQLite file, runs
# pytest against it, stops it.
#   SIDECAR_BIN  sidecar binary (default: target/debug, then target/release)
#   DAPR_VENV    virtualenv to create/use (default: <repo>/.venv-dapr)
#   PYTHON       interpreter used to create the venv (default: python3)
# Extra arguments are passed to pytest (e.g. -k purge).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${DAPR_VENV:-$root/.venv-dapr}"

# shellcheck source=tests/pysuite.sh
. "$root/tests/pysuite.sh"
bin="$(sidecar_bin "$root")"
python_venv "$venv" "$here/requirements.txt"
py="$venv/bin/python"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/dapr-e2e.XXXXXX")"
port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
address="127.0.0.1:$port"
"$bin" --host 127.0.0.1 --port "$port" --http-port 0 --db "$workdir/sidecar.sqlite" --log-level info \
    >"$workdir/sidecar.log" 2>&1 &
sidecar_pid=$!

stop_sidecar() {
    if kill -0 "$sidecar_pid" 2>/dev/null; then
        kill -TERM "$sidecar_pid" 2>/dev/null || true
        wait "$sidecar_pid" 2>/dev/null || true
    fi
}
show_log() {
    echo "----- last 80 lines of the sidecar log -----" >&2
    tail -n 80 "$workdir/sidecar.log" >&2 || true
}
trap 'stop_sidecar; rm -rf "$workdir"' EXIT

# Ready when Hello answers (through the SDK's own stub).
if ! "$py" - "$address" <<'PY'
import sys, time
import grpc
from google.protobuf import empty_pb2
import durabletask.internal.orchestrator_service_pb2_grpc as stubs

deadline = time.monotonic() + 30
while True:
    with grpc.insecure_channel(sys.argv[1]) as channel:
        try:
            stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=0.5)
            sys.exit(0)
        except grpc.RpcError:
            if time.monotonic() > deadline:
                sys.exit(1)
    time.sleep(0.05)
PY
then
    echo "the sidecar did not answer Hello on $address within 30s" >&2
    show_log
    exit 1
fi

set +e
DAPR_E2E_ADDRESS="$address" "$py" -m pytest "$here" -q -p no:cacheprovider --timeout=120 "$@"
status=$?
set -e
if [ "$status" -ne 0 ]; then
    show_log
fi
exit "$status"
