#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target for SECONDS_PER_TARGET (default 60), one after
# the other, keeping each target's corpus under fuzz/corpus/<target> (gitignored) so
# later runs start where earlier ones stopped. Prints executions per target and any crash
# (libFuzzer writes it to fuzz/artifacts/<target>/; replay one with
# `cargo +nightly fuzz run <target> <file>` from fuzz/).
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz
# when it is missing. FUZZ_JOBS=N runs N libFuzzer workers per target (default 1).
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
jobs="${FUZZ_JOBS:-1}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo +nightly install cargo-fuzz --locked
fi

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

for target in "${targets[@]}"; do
    cargo +nightly fuzz build -O "$target"
done

# Valid starting inputs per target (fuzz/seeds, gitignored; rewritten each run).
python3 seeds.py >/dev/null

mkdir -p logs
status=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    extra=()
    if [ -f "dict/$target.dict" ]; then
        extra+=("-dict=dict/$target.dict")
    fi
    if [ "$jobs" -gt 1 ]; then
        extra+=("-jobs=$jobs" "-workers=$jobs")
    fi
    log="logs/$target.log"
    echo "== $target: ${seconds}s" >&2
    set +e
    # seeds/<target> (from seeds.py) is read as a second corpus; new inputs go to corpus/.
    cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1
    rc=$?
    set -e
    # With -jobs > 1 libFuzzer writes each worker's output to fuzz-N.log.
    execs=$({ cat "$log"; cat fuzz-*.log 2>/dev/null || true; } | awk '/stat::number_of_executed_units:/ {n += $2} END {print n + 0}')
    rm -f fuzz-*.log
    crashes=$(find "artifacts/$target" -type f | wc -l)
    summary+=("$target: ${execs} executions in ${seconds}s, corpus $(find "corpus/$target" -type f | wc -l) inputs, ${crashes} crash file(s)")
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        echo "!! $target: libFuzzer exited $rc; see $log" >&2
        grep -E "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" >&2 || true
        find "artifacts/$target" -type f >&2
    fi
done

printf '%s\n' "${summary[@]}"
exit "$status"
