#!/usr/bin/env bash
# Regenerate requirements.lock: every runtime dependency of pyproject.toml ([project] dependencies, not the dev
# extra) pinned with the hashes of all its files on the index. The image installs exactly this set
# (pip --require-hashes --no-deps); tests/test_manifests.py fails when a dependency is missing from it.
# pip-tools runs in a throw-away venv, so the project's .venv is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "pip-tools==7.*" 2> >(grep -v 'is ignored: it is neither' >&2)
cp pyproject.toml "$work/"
(cd "$work" && venv/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
  --no-emit-find-links --output-file requirements.lock pyproject.toml 2> >(grep -v 'is ignored: it is neither' >&2))
sed 's#^\(\#    pip-compile .*\)$#\1\n\#    (run by tools/lock_requirements.sh)#' "$work/requirements.lock" > requirements.lock
echo "wrote requirements.lock ($(grep -c '^[a-z].*==' requirements.lock) packages)"
