#!/usr/bin/env bash
# End-to-end tests of the sidecar with Dapr's JavaScript SDK (@dapr/durabletask-js, pinned in
# package.json and package-lock.json, installed here by npm ci).
#
# Usage: tests/dapr_js/run.sh [test files...]   (default: every *.test.mjs)
#   SIDECAR_BIN   sidecar binary (default: ../../target/debug/durabletask-sidecar, relative to tests/dapr_js)
#   DTS_SDK_LOG=1 print the SDK's own console logging
#   KEEP_DB=1     keep the temp directory with the SQLite file and sidecar log
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

# shellcheck source=../lib/sidecar.sh
source "$HERE/../lib/sidecar.sh"

# --test-force-exit needs node >= 20.14 (see below).
command -v node >/dev/null || { echo "run.sh: node >= 20.14 is required" >&2; exit 2; }
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 14) ? 0 : 1)'; then
  echo "run.sh: node >= 20.14 required (found $(node --version))" >&2
  exit 2
fi

echo "== npm ci"
npm ci --no-audit --no-fund --loglevel=error

sidecar_start

export DAPR_JS_ADDR="localhost:$PORT"

if (( $# > 0 )); then
  FILES=("$@")
else
  FILES=(workflows.test.mjs)
fi

echo "== node --test ${FILES[*]}"
# --test-force-exit: the SDK's waitFor* calls race the RPC against a setTimeout they never
# clear, which would keep the test process alive for their whole timeout after the last test.
set +e
node --test --test-concurrency=1 --test-force-exit --test-reporter=spec --test-timeout=90000 "${FILES[@]}"
RC=$?
set -e

if ! sidecar_alive; then
  echo "run.sh: the sidecar exited during the tests" >&2
  RC=1
fi
exit $RC
