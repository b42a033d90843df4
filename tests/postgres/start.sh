#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests and prints its admin URL
# (postgres://postgres@127.0.0.1:<port>/postgres) on stdout; everything else goes to stderr.
#
#   tests/postgres/start.sh [DIR]    DIR: an empty or missing directory (default: a fresh
#                                    mktemp -d); it holds the data directory, the log and
#                                    the unix socket
#   tests/postgres/stop.sh DIR       stops the server and deletes DIR
#
# The server listens on 127.0.0.1 on a free port with trust authentication, and trades
# durability for speed (fsync off): it lives for one test run. It uses the newest
# /usr/lib/postgresql/*/bin (or PG_BIN). initdb and pg_ctl refuse to run as root, so as
# root they run as the `postgres` user.
#
# Example:
#   dir=$(mktemp -d); export DURABLETASK_TEST_POSTGRES=$(tests/postgres/start.sh "$dir")
#   cargo test --test store_postgres; tests/postgres/stop.sh "$dir"
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/postgres/common.sh
. "$here/common.sh"

pg_bin="$(find_pg_bin)"
dir="${1:-}"
if [ -z "$dir" ]; then
    dir="$(mktemp -d "${TMPDIR:-/tmp}/dt-pg.XXXXXX")"
else
    mkdir -p "$dir"
    if [ -n "$(ls -A "$dir")" ]; then
        echo "start.sh: $dir is not empty" >&2
        exit 1
    fi
fi
dir="$(cd "$dir" && pwd)"
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        echo "start.sh: running as root, but there is no 'postgres' user to run PostgreSQL as" >&2
        exit 1
    fi
    chown postgres: "$dir"
fi

data="$dir/data"
log="$dir/postgres.log"
if ! as_pg "$pg_bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale \
        --no-sync >"$dir/initdb.log" 2>&1; then
    echo "start.sh: initdb failed:" >&2
    cat "$dir/initdb.log" >&2
    exit 1
fi
cat >>"$data/postgresql.conf" <<CONF

# tests/postgres/start.sh: a throwaway server for one test run
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF

# A free port: the kernel's pick can be taken again before the server binds it, so a
# failed start is retried on another one.
for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    if as_pg "$pg_bin/pg_ctl" -D "$data" -l "$log" -o "-p $port" -w -t 30 start >/dev/null; then
        echo "PostgreSQL $("$pg_bin/postgres" --version | sed -E 's/^[^0-9]*([0-9.]+).*/\1/') on 127.0.0.1:$port" \
            "(data in $dir; stop with tests/postgres/stop.sh $dir)" >&2
        echo "postgres://postgres@127.0.0.1:$port/postgres"
        exit 0
    fi
    echo "start.sh: start on port $port failed (attempt $attempt)" >&2
done
echo "start.sh: PostgreSQL did not start; the end of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
