#!/usr/bin/env bash
# Browser tests of the dashboard: Playwright (playwright-core from npm) driving Debian's
# Chromium against the debug sidecar (fresh SQLite file, ephemeral ports) with a real
# @microsoft/durabletask-js worker. Saves screenshots to docs/screenshots/.
#
# Usage: tests/dashboard/run.sh
#   SIDECAR_BIN   sidecar binary (default: target/debug/durabletask-sidecar, built by `cargo build`)
#   CHROMIUM      browser binary (default: chromium on PATH)
#   HEADED=1      show the browser window
#   KEEP_DB=1     keep the temp directory with the SQLite file and sidecar log
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

# shellcheck source=../lib/sidecar.sh
source "$HERE/../lib/sidecar.sh"

CHROMIUM="${CHROMIUM:-$(command -v chromium || true)}"
if [[ -z "$CHROMIUM" ]]; then
  echo "run.sh: chromium is required (apt-get install chromium, or set CHROMIUM)" >&2
  exit 2
fi
export CHROMIUM
command -v node >/dev/null || { echo "run.sh: node (>= 20) is required" >&2; exit 2; }

echo "== npm ci"
# engine-strict off: the SDK's package.json says node >= 22, 0.4.0 works on 20 (see tests/js).
npm ci --no-audit --no-fund --engine-strict=false --loglevel=error

sidecar_start http

export DTS_ADDR="localhost:$PORT"
export DASHBOARD_URL="http://127.0.0.1:$HTTP_PORT"
export SCREENSHOT_DIR="$HERE/../../docs/screenshots"

echo "== node --test dashboard.test.mjs auth.test.mjs"
set +e
node --test --test-concurrency=1 --test-reporter=spec --test-timeout=120000 dashboard.test.mjs auth.test.mjs
RC=$?
set -e
if ! sidecar_alive; then
  echo "run.sh: the sidecar exited during the tests" >&2
  RC=1
fi
exit $RC
