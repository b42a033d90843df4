#!/usr/bin/env bash
# Runs every check CI runs, in order, stopping at the first failure:
#   1. rustfmt  2. clippy (warnings are errors)  3. Rust unit + integration tests
#   4. a seconds-long smoke run of the load generator against the debug sidecar
#   5. Python SDK end-to-end tests against the debug binary built by step 3 (a release
#      build would double CI's compile time and tests no behaviour the debug one lacks):
#      Microsoft's SDK (tests/python), then Dapr's (tests/dapr)
# Needs: the Rust toolchain (rust-toolchain.toml pins it), a C compiler (bundled SQLite),
# python3 with venv. tests/python/run.sh creates .venv-e2e and tests/dapr/run.sh .venv-dapr,
# each pip-installing pinned deps.
# SKIP_E2E=1 skips step 5 (no Python/network needed).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"

step_no=0
step_name=""
started=$SECONDS

section() {
    step_no=$((step_no + 1))
    step_name="$1"
    printf '\n==== [%d/9] %s ====\n' "$step_no" "$step_name"
}

on_exit() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        printf '\n==== FAILED at [%d/9] %s (exit %d, after %ds) ====\n' \
            "$step_no" "$step_name" "$status" "$((SECONDS - started))" >&2
    fi
}
trap on_exit EXIT

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --locked --all-targets --all-features -- -D warnings

section "cargo test (unit + integration)"
# Not --all-targets: that would also run the load generator, which needs a sidecar.
cargo test --locked

section "load generator smoke run (seconds; figures come from cargo bench, see README)"
cargo build --locked --bin durabletask-sidecar
port=$((20000 + RANDOM % 20000))
./target/debug/durabletask-sidecar --port "$port" --db :memory: --log-level warn &
sidecar_pid=$!
set +e
cargo test --locked --bench loadgen -- --quick --addr "http://127.0.0.1:$port" --sidecar-pid "$sidecar_pid"
smoke=$?
set -e
kill "$sidecar_pid" 2>/dev/null || true
wait "$sidecar_pid" 2>/dev/null || true
[ "$smoke" -eq 0 ]

bin="$root/target/debug/durabletask-sidecar"
e2e() {
    section "$1"
    if [ "${SKIP_E2E:-0}" = "1" ]; then
        echo "skipped (SKIP_E2E=1)"
    else
        SIDECAR_BIN="$bin" bash "$2"
    fi
}
e2e "Python SDK end-to-end tests" "$root/tests/python/run.sh"
e2e "Dapr Python SDK end-to-end tests" "$root/tests/dapr/run.sh"
e2e "JavaScript SDK end-to-end tests" "$root/tests/js/run.sh"
e2e "Java SDK end-to-end tests" "$root/tests/java/run.sh"
e2e "Go SDK end-to-end tests" "$root/tests/go/run.sh"

printf '\n==== all checks passed in %ds ====\n' "$((SECONDS - started))"
