#!/usr/bin/env bash
# End-to-end tests of Microsoft Agent Framework durable agents (agent-framework-durabletask,
# Python) against the sidecar binary: agents on a scripted chat client (no network, no
# model). Each test starts its own sidecar on a fresh SQLite file (conftest.py).
#   SIDECAR_BIN    sidecar binary (default: target/debug, then target/release)
#   AGENTFW_VENV   virtualenv to create/use (default: <repo>/.venv-agentfw)
#   PYTHON         interpreter used to create the venv (default: python3)
# Extra arguments are passed to pytest (e.g. -k restart).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${AGENTFW_VENV:-$root/.venv-agentfw}"

# shellcheck source=tests/pysuite.sh
. "$root/tests/pysuite.sh"
SIDECAR_BIN="$(sidecar_bin "$root")"
export SIDECAR_BIN
python_venv "$venv" "$here/requirements.txt"

cd "$root"
exec "$venv/bin/python" -m pytest "$here" -q -p no:cacheprovider --timeout=120 "$@"
