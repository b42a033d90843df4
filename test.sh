#!/usr/bin/env bash
# Runs every check CI runs, in order, stopping at the first failure:
#   1. a throwaway PostgreSQL server (tests/postgres/start.sh; stopped on exit) whose admin
#      URL is exported as DURABLETASK_TEST_POSTGRES, unless that is already set
#   2. rustfmt  3. clippy (warnings are errors)  4. clippy without the default `otlp`
#      feature (the build that leaves OpenTelemetry out must keep compiling)
#   5. Rust unit + integration tests (engine property tests included); the store
#      conformance suite runs on SQLite (tests/store_sqlite.rs) and on PostgreSQL
#      (tests/store_postgres.rs)
#   6. the server integration suites (tests/*.rs on TestServer) again, on PostgreSQL
#      (DURABLETASK_TEST_BACKEND=postgres: a fresh database per server)
#   7. a seconds-long smoke run of the load generator against the debug sidecar
#   8.-22. end-to-end tests against the debug binary built by step 5 (a release build
#      would double CI's compile time and tests no behaviour the debug one lacks):
#      Microsoft's Python SDK on SQLite, over TLS with bearer tokens (tests/python_tls),
#      the Durable Task Scheduler SDK on two task hubs (tests/python_dts),
#      then on PostgreSQL (tests/python), three sidecars
#      on one PostgreSQL database with one killed and one paused (tests/multinode), Dapr's
#      (tests/dapr), Microsoft Agent Framework durable agents (tests/agent_framework), one
#      OpenTelemetry trace across the Python SDK and the sidecar
#      (tests/tracing), a schemathesis run of the HTTP API against /openapi.json
#      (tests/schemathesis), JavaScript (tests/js), Dapr's JavaScript SDK
#      (tests/dapr_js), the dashboard's vendored libraries against a fresh npm fetch
#      (ui/vendor.sh --check) and the dashboard in Chromium (tests/dashboard), Java
#      (tests/java), Go (tests/go)
# Needs: the Rust toolchain (rust-toolchain.toml pins it), a C compiler (bundled SQLite),
# PostgreSQL (apt-get install postgresql: initdb, pg_ctl, psql), python3 with venv, and for
# the SDK suites Node, a JDK + Maven, Go, and Chromium for the dashboard (.ci/run installs
# what a Debian machine lacks).
# Each SDK suite installs its pinned SDK (tests/python/run.sh creates .venv-e2e,
# tests/dapr/run.sh .venv-dapr, ...).
# SKIP_E2E=1 skips steps 8-22 (no Python/network needed).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"

step_no=0
steps=22
step_name=""
started=$SECONDS
pg_dir=""

section() {
    step_no=$((step_no + 1))
    step_name="$1"
    printf '\n==== [%d/%d] %s ====\n' "$step_no" "$steps" "$step_name"
}

on_exit() {
    local status=$?
    if [ -f "$pg_dir/data/PG_VERSION" ]; then
        "$root/tests/postgres/stop.sh" "$pg_dir" || true
    elif [ -n "$pg_dir" ]; then
        rm -rf "$pg_dir" # start.sh failed before initdb
    fi
    if [ "$status" -ne 0 ]; then
        printf '\n==== FAILED at [%d/%d] %s (exit %d, after %ds) ====\n' \
            "$step_no" "$steps" "$step_name" "$status" "$((SECONDS - started))" >&2
    fi
}
trap on_exit EXIT

section "PostgreSQL server for the PostgreSQL runs"
if [ -n "${DURABLETASK_TEST_POSTGRES:-}" ]; then
    echo "using DURABLETASK_TEST_POSTGRES (already set)"
else
    pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/dt-pg.XXXXXX")"
    DURABLETASK_TEST_POSTGRES="$("$root/tests/postgres/start.sh" "$pg_dir")"
fi
export DURABLETASK_TEST_POSTGRES

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --locked --all-targets --all-features -- -D warnings

section "cargo clippy --no-default-features (no OpenTelemetry)"
# clippy only checks: the debug binary the end-to-end steps use keeps the feature.
cargo clippy --locked --all-targets --no-default-features -- -D warnings

section "cargo test (unit + integration; store conformance on SQLite and PostgreSQL)"
# Not --all-targets: that would also run the load generator, which needs a sidecar.
# --no-fail-fast: a failing suite (one backend) does not hide the results of the others.
cargo test --locked --no-fail-fast

section "integration suites on PostgreSQL"
# Every suite that runs a TestServer (tests/common), now on a fresh PostgreSQL database per
# server; suites about SQLite itself (tests/sqlite_*.rs) and the store suites are left out.
suites=()
for file in tests/*.rs; do
    name="$(basename "$file" .rs)"
    case "$name" in sqlite_* | store_*) continue ;; esac
    if grep -q 'TestServer' "$file"; then
        suites+=(--test "$name")
    fi
done
echo "suites: ${suites[*]}"
DURABLETASK_TEST_BACKEND=postgres cargo test --locked --no-fail-fast "${suites[@]}"

section "load generator smoke run (seconds; figures come from cargo bench, see README)"
cargo build --locked --bin durabletask-sidecar
port=$((20000 + RANDOM % 20000))
./target/debug/durabletask-sidecar --port "$port" --http-port 0 --db :memory: --log-level warn &
sidecar_pid=$!
set +e
cargo test --locked --bench loadgen -- --quick --workload all,soak --addr "http://127.0.0.1:$port" --sidecar-pid "$sidecar_pid"
smoke=$?
set -e
kill "$sidecar_pid" 2>/dev/null || true
wait "$sidecar_pid" 2>/dev/null || true
[ "$smoke" -eq 0 ]

bin="$root/target/debug/durabletask-sidecar"
# e2e NAME SCRIPT [VAR=value...]: the variables are set for that suite only.
e2e() {
    section "$1"
    if [ "${SKIP_E2E:-0}" = "1" ]; then
        echo "skipped (SKIP_E2E=1)"
    else
        SIDECAR_BIN="$bin" env "${@:3}" bash "$2"
    fi
}
e2e "Python SDK end-to-end tests (SQLite)" "$root/tests/python/run.sh"
e2e "Python SDK over TLS with bearer tokens" "$root/tests/python_tls/run.sh"
e2e "Durable Task Scheduler SDK (durabletask-azuremanaged), two task hubs" "$root/tests/python_dts/run.sh"
# Each sidecar of the suite on a fresh database of that server (tests/python/conftest.py).
e2e "Python SDK end-to-end tests (PostgreSQL)" "$root/tests/python/run.sh" \
    "SIDECAR_POSTGRES_URL=$DURABLETASK_TEST_POSTGRES"
# Three sidecars on one database, one killed and one paused past its lease.
e2e "Multi-node failover on PostgreSQL (Python SDK workers)" "$root/tests/multinode/run.sh"
e2e "Dapr Python SDK end-to-end tests" "$root/tests/dapr/run.sh"
e2e "Microsoft Agent Framework durable agents (Python)" "$root/tests/agent_framework/run.sh"
e2e "Tracing: one trace across the Python SDK and the sidecar (OTLP)" "$root/tests/tracing/run.sh"
e2e "HTTP API property-based run (schemathesis against /openapi.json)" "$root/tests/schemathesis/run.sh"
e2e "JavaScript SDK end-to-end tests" "$root/tests/js/run.sh"
e2e "Dapr JavaScript SDK end-to-end tests" "$root/tests/dapr_js/run.sh"
section "Dashboard libraries equal a fresh npm fetch"
if [ "${SKIP_E2E:-0}" = "1" ]; then echo "skipped (SKIP_E2E=1)"; else bash "$root/ui/vendor.sh" --check; fi
e2e "Dashboard in Chromium (Playwright, JS SDK worker)" "$root/tests/dashboard/run.sh"
e2e "Java SDK end-to-end tests" "$root/tests/java/run.sh"
e2e "Go SDK end-to-end tests" "$root/tests/go/run.sh"

printf '\n==== all checks passed in %ds ====\n' "$((SECONDS - started))"
