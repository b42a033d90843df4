#!/usr/bin/env bash
# Run the Python SDK end-to-end tests against the sidecar binary.
#   PY_VENV     virtualenv to create/use (default: <repo>/.venv-e2e)
#   SIDECAR_BIN sidecar binary (default: target/release, then target/debug)
#   PYTHON      interpreter used to create the venv (default: python3)
# Extra arguments are passed to pytest (e.g. -k suspend, tests/python/test_crash.py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PY_VENV:-$root/.venv-e2e}"

# shellcheck source=tests/pysuite.sh
. "$root/tests/pysuite.sh"
python_venv "$venv" "$here/requirements.txt"

cd "$root"
set +e
"$venv/bin/python" -m pytest "$here" -q -p no:cacheprovider --timeout=180 "$@"
status=$?
set -e
exit $status
