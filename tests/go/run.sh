#!/usr/bin/env bash
# Run the Go SDK (github.com/microsoft/durabletask-go) end-to-end tests against the sidecar.
#   SIDECAR_BIN  sidecar binary (default: <repo>/target/debug/durabletask-sidecar)
# The tests start their own sidecar processes (free port, temp SQLite file) and stop them.
# Extra arguments go to `go test` (e.g. -v, -run TestSuspendResume).
# Debug knobs: E2E_VERBOSE=1 (SDK logs), E2E_SIDECAR_LOG_LEVEL=debug, E2E_KEEP_TMP=1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

SIDECAR_BIN="${SIDECAR_BIN:-../../target/debug/durabletask-sidecar}"
case "$SIDECAR_BIN" in
    /*) ;;
    *) SIDECAR_BIN="$(cd "$(dirname "$SIDECAR_BIN")" && pwd)/$(basename "$SIDECAR_BIN")" ;;
esac
export SIDECAR_BIN
if [ ! -x "$SIDECAR_BIN" ]; then
    echo "sidecar binary not found or not executable: $SIDECAR_BIN (build it or set SIDECAR_BIN)" >&2
    exit 1
fi

command -v go >/dev/null 2>&1 || { echo "go toolchain not found on PATH" >&2; exit 1; }
go version

# Modules come from the module proxy, verified against the committed go.sum.
go mod download
go test ./... -count=1 -timeout 8m "$@"
