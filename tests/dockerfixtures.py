"""Docker fixtures: the engine (skip without one, fail under CI=true) and a busybox image built locally.

No registry is reachable, so test images are built ``FROM scratch`` with Debian's static busybox.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.dispatch.executors.docker import LABEL_JOB_ID

IN_CI = os.environ.get("CI", "").lower() == "true"
BUSYBOX_IMAGE = "hades-test-busybox:1"
BUSYBOX_BINARY = Path("/bin/busybox")

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: .ci/run must install and start Docker")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    try:
        import docker
        import docker.errors
    except ImportError:  # pragma: no cover - docker is a runtime dependency
        _unavailable("the docker SDK is not installed")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        _unavailable(f"no Docker engine answers ({exc.__class__.__name__})")
    yield client
    client.close()


def build_busybox_image(client: Any) -> str:
    """Build ``hades-test-busybox:1`` unless the engine has it (also used by the benchmarks)."""
    import docker.errors

    try:
        client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(BUSYBOX_BINARY, Path(context) / "busybox")
        (Path(context) / "Dockerfile").write_text(DOCKERFILE)
        client.images.build(path=context, tag=BUSYBOX_IMAGE, rm=True)
    return BUSYBOX_IMAGE


@pytest.fixture(scope="session")
def busybox_image(docker_client: Any) -> str:
    """A tiny image with sh and the busybox tools (``ip``, ``sleep``, ``head`` …)."""
    if not BUSYBOX_BINARY.exists():
        _unavailable("/bin/busybox is missing: apt-get install busybox-static")
    return build_busybox_image(docker_client)


def remove_jobs(client: Any, job_ids: list[str]) -> None:
    """Remove every container and volume the engine still has of ``job_ids`` (emptied as it goes)."""
    while job_ids:
        selector = {"label": f"{LABEL_JOB_ID}={job_ids.pop()}"}
        for container in client.containers.list(all=True, filters=selector):
            container.remove(force=True)
        for volume in client.volumes.list(filters=selector):
            volume.remove(force=True)
