#!/usr/bin/env bash
# One orchestration traced end to end: the sidecar (--otlp-endpoint), the Python SDK's
# client and worker all export OTLP/HTTP to a receiver the test starts; the test checks
# they share one trace. Uses the binary `cargo build` made; builds nothing.
#   SIDECAR_BIN    sidecar binary (default: target/debug, then target/release)
#   TRACING_VENV   virtualenv to create/use (default: <repo>/.venv-tracing; not the
#                  Python suite's, whose durabletask has no OpenTelemetry packages)
#   PYTHON         interpreter used to create the venv (default: python3)
# Extra arguments are passed to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${TRACING_VENV:-$root/.venv-tracing}"

# shellcheck source=tests/pysuite.sh
. "$root/tests/pysuite.sh"
SIDECAR_BIN="$(sidecar_bin "$root")"
export SIDECAR_BIN
python_venv "$venv" "$here/requirements.txt"

cd "$here"
exec "$venv/bin/python" -m pytest "$here" -q -p no:cacheprovider --timeout=180 "$@"
