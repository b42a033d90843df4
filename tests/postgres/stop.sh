#!/usr/bin/env bash
# Stops a server started by tests/postgres/start.sh and deletes its directory.
#   tests/postgres/stop.sh DIR
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/postgres/common.sh
. "$here/common.sh"

dir="${1:?usage: tests/postgres/stop.sh DIR (the directory given to or made by start.sh)}"
if [ ! -f "$dir/data/PG_VERSION" ]; then
    echo "stop.sh: $dir holds no server started by start.sh" >&2
    exit 1
fi
pg_bin="$(find_pg_bin)"
if [ -f "$dir/data/postmaster.pid" ]; then
    # Immediate: the server is thrown away, nothing in it needs a clean shutdown.
    as_pg "$pg_bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null
fi
rm -rf "$dir"
