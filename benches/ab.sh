#!/usr/bin/env bash
# A/B benchmark of two commits: builds the sidecar of each (release), then runs the same
# load-generator workload against them in alternating rounds (A B, B A, A B, ...), each
# run on a fresh database, and prints the median of every figure for A and B and the
# ratio B/A. One run shows a regression next to its baseline, on the same noisy machine.
#
#   benches/ab.sh [--rounds N] [--postgres ADMIN_URL] BASE NEW [-- LOADGEN ARGS...]
#
# BASE and NEW are any git revisions (NEW may be the word WORKTREE: the files as they are
# now, uncommitted changes included). The load generator is NEW's, so both sidecars face
# the same driver. Loadgen arguments default to `--workload w1 --steps 3 --concurrency
# 1,1000`. --postgres runs each round on a fresh database of that server instead of a
# SQLite file. Builds go to target/ab/<sha>/ and are reused by later runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds=3
pg_admin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --postgres) pg_admin="$2"; shift 2 ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
[ $# -ge 2 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
base="$1"; new="$2"; shift 2
[ "${1:-}" = "--" ] && shift
loadgen_args=("$@")
[ ${#loadgen_args[@]} -gt 0 ] || loadgen_args=(--workload w1 --steps 3 --concurrency 1,1000)

work="$root/target/ab"
runs="$(mktemp -d "${TMPDIR:-/tmp}/ab.XXXXXX")"
mkdir -p "$work"
sidecar_pid=""
cleanup() {
    [ -n "$sidecar_pid" ] && kill "$sidecar_pid" 2>/dev/null || true
    rm -rf "$runs/db"
}
trap cleanup EXIT

# build REV -> prints the directory holding the release sidecar (and loadgen) of REV.
build() {
    local rev="$1" src sha
    if [ "$rev" = "WORKTREE" ]; then
        src="$root"; sha="worktree"
    else
        sha="$(git -C "$root" rev-parse --short=12 "$rev^{commit}")"
        src="$work/src-$sha"
        if [ ! -d "$src" ]; then
            git -C "$root" worktree add --detach --force "$src" "$sha" >&2
        fi
    fi
    local target="$work/target-$sha"
    echo "building $rev ($sha) ..." >&2
    (cd "$src" && CARGO_TARGET_DIR="$target" cargo build --locked --release --quiet \
        --bin durabletask-sidecar >&2)
    echo "$target/release"
}

# loadgen_of REV -> the release load-generator binary built from REV.
loadgen_of() {
    local rev="$1" src target
    if [ "$rev" = "WORKTREE" ]; then src="$root"; target="$work/target-worktree"
    else
        local sha; sha="$(git -C "$root" rev-parse --short=12 "$rev^{commit}")"
        src="$work/src-$sha"; target="$work/target-$sha"
    fi
    (cd "$src" && CARGO_TARGET_DIR="$target" cargo bench --locked --bench loadgen --no-run \
        --message-format=json 2>/dev/null) |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loadgen" and m.get("executable"):
        print(m["executable"])'
}

dir_a="$(build "$base")"
dir_b="$(build "$new")"
loadgen="$(loadgen_of "$new" | tail -1)"
[ -x "$loadgen" ] || { echo "no loadgen binary built" >&2; exit 1; }

# run LABEL DIR ROUND: one sidecar on a fresh database, one loadgen run, JSON kept.
run() {
    local label="$1" dir="$2" round="$3" db_args=() db_name=""
    rm -rf "$runs/db"; mkdir -p "$runs/db"
    if [ -n "$pg_admin" ]; then
        db_name="ab_${label,,}_${round}_$$"
        psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db_name" -c "CREATE DATABASE $db_name" >/dev/null
        db_args=(--db "${pg_admin%/*}/$db_name")
    else
        db_args=(--db "$runs/db/ab.sqlite")
    fi
    local port=$((20000 + RANDOM % 20000))
    "$dir/durabletask-sidecar" --port "$port" --http-port 0 "${db_args[@]}" --log-level warn \
        2>"$runs/$label-$round.err" &
    sidecar_pid=$!
    "$loadgen" --addr "http://127.0.0.1:$port" --sidecar-pid "$sidecar_pid" --label "$label" \
        --json "${loadgen_args[@]}" >"$runs/$label-$round.out" 2>>"$runs/$label-$round.err" ||
        { echo "run $label/$round failed; see $runs/$label-$round.err" >&2; exit 1; }
    kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null || true; sidecar_pid=""
    if [ -n "$db_name" ]; then
        psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db_name" >/dev/null
    fi
    echo "  round $round $label done" >&2
}

for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then order=(A B); else order=(B A); fi
    for label in "${order[@]}"; do
        if [ "$label" = A ]; then run A "$dir_a" "$round"; else run B "$dir_b" "$round"; fi
    done
done

python3 - "$runs" "$base" "$new" <<'PY'
import glob, json, statistics, sys
runs, base, new = sys.argv[1:4]
figures = {}  # (workload, case, figure) -> {"A": [...], "B": [...]}
for path in sorted(glob.glob(f"{runs}/*.out")):
    label = path.rsplit("/", 1)[1].split("-")[0]
    text = open(path).read()
    doc = json.loads(text[text.index("{\n"):])
    for row in doc["rows"]:
        for name, value in {**row["figures"], **row["extras"]}.items():
            figures.setdefault((row["workload"], row["case"], name), {}).setdefault(label, []).append(value)
print(f"A = {base}, B = {new}; medians of {len(glob.glob(f'{runs}/A-*.out'))} runs each")
print(f"{'workload':8} {'case':18} {'figure':28} {'A':>12} {'B':>12} {'B/A':>7}")
for (workload, case, name), by in sorted(figures.items()):
    if "A" not in by or "B" not in by:
        continue
    a, b = statistics.median(by["A"]), statistics.median(by["B"])
    ratio = f"{b / a:7.2f}" if a else "      -"
    print(f"{workload:8} {case:18} {name:28} {a:12.3f} {b:12.3f} {ratio}")
print(f"(raw runs in {runs})")
PY
