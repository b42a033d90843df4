# Shared by start.sh and stop.sh (sourced, not run).

# The newest installed PostgreSQL's bin directory, or PG_BIN.
find_pg_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        echo "$PG_BIN"
        return
    fi
    local newest=""
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] || continue
        if [ -z "$newest" ] || [ "$(printf '%s\n%s\n' "$newest" "$bin" | sort -V | tail -n 1)" = "$bin" ]; then
            newest="$bin"
        fi
    done
    if [ -z "$newest" ]; then
        echo "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): on Debian or" \
            "Ubuntu, apt-get install postgresql (or set PG_BIN to a directory holding initdb," \
            "pg_ctl and postgres)" >&2
        return 1
    fi
    echo "$newest"
}

# Runs a PostgreSQL program; as root, as the postgres user (initdb and pg_ctl refuse root).
as_pg() {
    if [ "$(id -u)" -ne 0 ]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

# A TCP port nobody listens on at the moment.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 30000))
        # A refused connection means the port is free (bash's /dev/tcp).
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}
