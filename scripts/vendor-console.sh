#!/usr/bin/env bash
# Re-vendor the console's front-end assets from npm at the pinned versions (needs npm; the
# gateway itself never runs Node). Prints each tarball's sha256 for
# src/tollway/admin/console/static/vendor/README.md.
set -euo pipefail
dest="$(cd "$(dirname "$0")/.." && pwd)/src/tollway/admin/console/static/vendor"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent htmx.org@2.0.11 htmx-ext-sse@2.2.4 uplot@1.6.32 >/dev/null
sha256sum ./*.tgz
for t in ./*.tgz; do mkdir -p "x/${t%.tgz}" && tar xzf "$t" -C "x/${t%.tgz}"; done
cp x/htmx.org-2.0.11/package/dist/htmx.min.js "$dest/htmx-2.0.11.min.js"
cp x/htmx.org-2.0.11/package/LICENSE "$dest/htmx-2.0.11.LICENSE"
cp x/htmx-ext-sse-2.2.4/package/dist/sse.min.js "$dest/htmx-ext-sse-2.2.4.min.js"
cp x/htmx-ext-sse-2.2.4/package/LICENSE "$dest/htmx-ext-sse-2.2.4.LICENSE"
cp x/uplot-1.6.32/package/dist/uPlot.iife.min.js "$dest/uplot-1.6.32.min.js"
cp x/uplot-1.6.32/package/dist/uPlot.min.css "$dest/uplot-1.6.32.min.css"
cp x/uplot-1.6.32/package/LICENSE "$dest/uplot-1.6.32.LICENSE"
