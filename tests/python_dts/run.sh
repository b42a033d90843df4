#!/usr/bin/env bash
# The Durable Task Scheduler SDK (PyPI durabletask-azuremanaged) against the sidecar, as an
# app written for the DTS emulator would use it: no credential, insecure channel, a task hub
# per client and worker (the `taskhub` metadata). Two hubs at once, checked for isolation.
#   PY_VENV     virtualenv to create/use (default: <repo>/.venv-dts; the DTS package pulls in
#               azure-identity, which the other Python suites do not need)
#   SIDECAR_BIN sidecar binary (default: target/release, then target/debug)
#   PYTHON      interpreter used to create the venv (default: python3)
# Extra arguments are passed to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PY_VENV:-$root/.venv-dts}"

# shellcheck source=tests/pysuite.sh
. "$root/tests/pysuite.sh"
python_venv "$venv" "$here/requirements.txt"

cd "$root"
set +e
"$venv/bin/python" -m pytest "$here" -q -p no:cacheprovider "$@"
status=$?
set -e
exit $status
