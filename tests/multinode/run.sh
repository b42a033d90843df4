#!/usr/bin/env bash
# Multi-node tests: several sidecars on one PostgreSQL database, real Python SDK workers,
# one sidecar killed and one paused past its lease (STYLE.md §15).
#   DURABLETASK_TEST_POSTGRES  admin URL of a PostgreSQL server (each test creates and drops
#                              a database there); unset: the tests skip, or fail under CI
#   SIDECAR_BIN                sidecar binary (default: the newer of target/debug, target/release)
#   PY_VENV                    virtualenv to create/use (default: <repo>/.venv-e2e, shared
#                              with tests/python, same pinned SDK)
#   PYTHON                     interpreter used to create the venv (default: python3)
# Extra arguments are passed to pytest (e.g. -k cross_node, -s to see the measurements).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PY_VENV:-$root/.venv-e2e}"

# shellcheck source=tests/pysuite.sh
. "$root/tests/pysuite.sh"
python_venv "$venv" "$root/tests/python/requirements.txt"

cd "$root"
exec "$venv/bin/python" -m pytest "$here" -c "$here/pytest.ini" -q -p no:cacheprovider "$@"
