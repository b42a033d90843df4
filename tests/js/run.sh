#!/usr/bin/env bash
# End-to-end tests of the sidecar with the JavaScript SDK (@microsoft/durabletask-js).
#
# Usage: tests/js/run.sh [test files...]   (default: every *.test.mjs)
#   SIDECAR_BIN   sidecar binary (default: ../../target/debug/durabletask-sidecar, relative to tests/js)
#   DTS_SDK_LOG=1 print the SDK's own logging
#   KEEP_DB=1     keep the temp directory with the SQLite file and sidecar log
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

# shellcheck source=../lib/sidecar.sh
source "$HERE/../lib/sidecar.sh"

# The SDK's package.json says engines.node >= 22, but 0.4.0 works on Node 20 (what this machine
# has); node:test and --test-concurrency need >= 20.10.
command -v node >/dev/null || { echo "run.sh: node (>= 20) is required" >&2; exit 2; }
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if (( NODE_MAJOR < 20 )); then
  echo "run.sh: node >= 20 required (found $(node --version))" >&2
  exit 2
fi

echo "== npm ci"
npm ci --no-audit --no-fund --engine-strict=false --loglevel=error

sidecar_start

export DTS_ADDR="localhost:$PORT"

if (( $# > 0 )); then
  FILES=("$@")   # explicit test files, e.g. ./run.sh durability.test.mjs
else
  FILES=(orchestrations.test.mjs durability.test.mjs entities.test.mjs tls.test.mjs taskhubs.test.mjs)
fi

echo "== node --test ${FILES[*]}"
# --test-concurrency=1: the files share one sidecar, and a worker of one file would take (and
# fail as "not registered") the other file's work items if they ran at the same time.
set +e
node --test --test-concurrency=1 --test-reporter=spec --test-timeout=90000 "${FILES[@]}"
RC=$?
set -e

if ! sidecar_alive; then
  echo "run.sh: the sidecar exited during the tests" >&2
  RC=1
fi
# (on failure the EXIT trap prints the sidecar's log; on success nothing is printed after the
# runner's summary so CI can read its closing lines)
exit $RC
