#!/usr/bin/env bash
# Runs every check CI runs, in order, stopping at the first failure:
#   1. rustfmt  2. clippy (warnings are errors)  3. Rust unit + integration tests
#   4. Python SDK end-to-end tests against the debug binary built by step 3 (a release
#      build would double CI's compile time and tests no behaviour the debug one lacks)
# Needs: the Rust toolchain (rust-toolchain.toml pins it), a C compiler (bundled SQLite),
# python3 with venv. tests/python/run.sh creates .venv-e2e and pip-installs pinned deps.
# SKIP_E2E=1 skips step 4 (no Python/network needed).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"

step_no=0
step_name=""
started=$SECONDS

section() {
    step_no=$((step_no + 1))
    step_name="$1"
    printf '\n==== [%d/4] %s ====\n' "$step_no" "$step_name"
}

on_exit() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        printf '\n==== FAILED at [%d/4] %s (exit %d, after %ds) ====\n' \
            "$step_no" "$step_name" "$status" "$((SECONDS - started))" >&2
    fi
}
trap on_exit EXIT

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --locked --all-targets --all-features -- -D warnings

section "cargo test (unit + integration)"
cargo test --locked --all-targets

section "Python SDK end-to-end tests"
if [ "${SKIP_E2E:-0}" = "1" ]; then
    echo "skipped (SKIP_E2E=1)"
else
    cargo build --locked --bin durabletask-sidecar
    SIDECAR_BIN="$root/target/debug/durabletask-sidecar" bash "$root/tests/python/run.sh"
fi

printf '\n==== all checks passed in %ds ====\n' "$((SECONDS - started))"
