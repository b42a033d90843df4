#!/usr/bin/env bash
# Vendors the dashboard's browser libraries from the npm registry at pinned versions into
# ui/vendor/ (committed, embedded in the binary by src/http/ui.rs: `cargo build` needs no Node).
#
# Usage: ui/vendor.sh           fetch with `npm pack` and (re)write ui/vendor/
#        ui/vendor.sh --check   fetch into a temp dir and fail if ui/vendor/ differs (CI)
#
# To upgrade a library: change its version below, run ui/vendor.sh, look at the diff,
# run tests/dashboard/run.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="$HERE/vendor"

# package@version, then "path in the package -> file name in ui/vendor/" pairs.
# preact + hooks: the ES module builds (hooks imports the bare name "preact", which the
# import map in ui/index.html resolves). htm: standalone ES module build.
# vis-timeline: the "standalone" ES build bundles its peer dependencies (vis-data, moment).
PACKAGES=(
  "preact@10.29.8|dist/preact.mjs:preact.mjs hooks/dist/hooks.mjs:preact-hooks.mjs LICENSE:LICENSES/preact.txt"
  "htm@3.1.1|dist/htm.mjs:htm.mjs LICENSE:LICENSES/htm.txt"
  "vis-timeline@8.5.4|standalone/esm/vis-timeline-graph2d.min.mjs:vis-timeline-graph2d.min.mjs styles/vis-timeline-graph2d.min.css:vis-timeline-graph2d.min.css LICENSE.MIT.txt:LICENSES/vis-timeline-MIT.txt LICENSE.Apache-2.0.txt:LICENSES/vis-timeline-APACHE-2.0.txt"
)

command -v npm >/dev/null || { echo "vendor.sh: npm is required" >&2; exit 2; }

WORK="$(mktemp -d -t dts-ui-vendor.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
OUT="$WORK/out"
mkdir -p "$OUT/LICENSES"

for entry in "${PACKAGES[@]}"; do
  spec="${entry%%|*}"
  files="${entry#*|}"
  name="${spec%@*}"
  dir="$WORK/pkg/$name"
  mkdir -p "$dir"
  tarball="$(cd "$WORK" && npm pack --silent "$spec")"
  tar -xzf "$WORK/$tarball" -C "$dir"
  for pair in $files; do
    from="${pair%%:*}"
    to="${pair#*:}"
    cp "$dir/package/$from" "$OUT/$to"
  done
  echo "$spec" >>"$OUT/VERSIONS"
done

if [[ "${1:-}" == "--check" ]]; then
  if diff -r "$OUT" "$DEST" >/dev/null; then
    echo "vendor.sh: ui/vendor/ matches a fresh fetch"
  else
    echo "vendor.sh: ui/vendor/ differs from a fresh fetch (run ui/vendor.sh and commit):" >&2
    diff -rq "$OUT" "$DEST" >&2 || true
    exit 1
  fi
else
  rm -rf "$DEST"
  cp -r "$OUT" "$DEST"
  echo "vendor.sh: wrote $(find "$DEST" -type f | wc -l) files to ui/vendor/"
fi
