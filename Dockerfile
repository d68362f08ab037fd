# One image for every Hades function; the command picks it:
#   docker run IMAGE                                   → submit (the default command)
#   docker run IMAGE python -m functions.dispatch      → dispatch (or functions.logs)
#
# BASE_IMAGE is the runtime stage; BUILDER_IMAGE (default: the same) must also have `python3 -m venv`. Both must
# come from the same family, because the virtual environment built in one runs on the other's /usr/…/python3.
# `make image` (tools/build_image.sh) falls back to a Debian bookworm base built with mmdebstrap when the default
# cannot be pulled, and passes a pre-downloaded wheelhouse (build/wheels) when the build cannot reach PyPI.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG BUILDER_IMAGE=${BASE_IMAGE}

FROM ${BUILDER_IMAGE} AS builder
# Only requirements.lock, the source packages and an optional build/wheels pass .dockerignore.
COPY . /src/
# Dependencies come from the locked, hash-checked set only (--no-deps: the lock is complete); binary wheels
# only, so no compiler is ever needed. pip and setuptools leave the venv afterwards: nothing in the final image
# can install or build anything.
RUN set -eu; \
    python3 -m venv /opt/hades; \
    if [ -d /src/build/wheels ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/build/wheels; fi; \
    /opt/hades/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-deps \
        --require-hashes --only-binary=:all: -r /src/requirements.lock; \
    /opt/hades/bin/python -m pip uninstall --yes --quiet pip setuptools; \
    rm -rf /opt/hades/bin/pip* /opt/hades/bin/activate* /opt/hades/bin/Activate.ps1; \
    mkdir -p /app; \
    cp -r /src/runtime /src/functions /src/schemas /app/; \
    /opt/hades/bin/python -m compileall -q /app /opt/hades/lib

FROM ${BASE_IMAGE}
# A numeric user, so the kubelet can verify runAsNonRoot; a passwd entry, so getpwuid() works.
RUN groupadd --system --gid 10001 hades \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin hades
COPY --from=builder /opt/hades /opt/hades
COPY --from=builder /app /app
# The root filesystem may be read-only (Kubernetes: readOnlyRootFilesystem): bytecode is compiled above and
# nothing else is written outside /tmp.
ENV PATH=/opt/hades/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HADES_HTTP_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
EXPOSE 8080 8081 8082
# SIGTERM is what the functions handle (aiohttp's run_app; dispatch's two-phase stop).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "functions.submit"]
