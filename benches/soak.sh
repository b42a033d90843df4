#!/usr/bin/env bash
# Soak run (issue 11 §6): builds the release sidecar, starts it on a fresh database, runs
# the loadgen's soak workload against it with --sidecar-pid (so RSS and CPU are reported),
# then stops the sidecar. Exit status is the loadgen's: 1 on any error or failed verdict.
#
#   benches/soak.sh [--postgres ADMIN_URL] [-- LOADGEN ARGS...]
#
# Loadgen arguments default to `--in-flight 10000 --streams 100 --connections 8
# --soak-secs 1800` (30 minutes); any given after -- are added after those, and the later
# flag wins (e.g. `-- --soak-secs 180 --warmup-secs 60 --report-secs 20`). Without
# --postgres the sidecar uses a new SQLite file in a temporary directory (deleted
# afterwards); with it, a new database on that server (created and dropped with psql).
# The sidecar's log goes to soak-sidecar.log in that temporary directory, kept on failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pg_admin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --postgres) pg_admin="$2"; shift 2 ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        --) shift; break ;;
        *) sed -n '2,13p' "$0" >&2; exit 2 ;;
    esac
done
loadgen_args=(--in-flight 10000 --streams 100 --connections 8 --soak-secs 1800 "$@")

cd "$root"
echo "building the release sidecar and loadgen ..." >&2
cargo build --locked --release --quiet --bin durabletask-sidecar
cargo bench --locked --bench loadgen --no-run --quiet

work="$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")"
sidecar_pid=""
db_name=""
status=1
cleanup() {
    if [ -n "$sidecar_pid" ]; then
        kill "$sidecar_pid" 2>/dev/null || true
        wait "$sidecar_pid" 2>/dev/null || true
    fi
    if [ -n "$db_name" ]; then
        psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db_name" >/dev/null || true
    fi
    if [ "$status" -eq 0 ]; then
        rm -rf "$work"
    else
        echo "sidecar log kept in $work/soak-sidecar.log" >&2
        rm -f "$work"/soak.sqlite*
    fi
}
trap cleanup EXIT

if [ -n "$pg_admin" ]; then
    db_name="soak_$$"
    psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db_name" -c "CREATE DATABASE $db_name" >/dev/null
    db="${pg_admin%/*}/$db_name"
else
    db="$work/soak.sqlite"
fi

port=$((20000 + RANDOM % 20000))
./target/release/durabletask-sidecar --port "$port" --http-port 0 --db "$db" --log-level warn \
    2>"$work/soak-sidecar.log" &
sidecar_pid=$!

# The loadgen retries its connections for 15 s, so no wait for the sidecar is needed.
set +e
cargo bench --locked --bench loadgen --quiet -- --workload soak \
    --addr "http://127.0.0.1:$port" --sidecar-pid "$sidecar_pid" --label ours "${loadgen_args[@]}"
status=$?
set -e
if [ -z "$pg_admin" ] && [ -f "$db" ]; then
    echo "SQLite file at the end: $(du -m "$db" | cut -f1) MB (plus WAL $(du -m "$db-wal" 2>/dev/null | cut -f1 || echo 0) MB)" >&2
fi
exit "$status"
