"""The one container image (Dockerfile, `make image`): what is in it, and the three functions running from it.

The functions run in containers on the host network against the session's nats-server; dispatch gets the
Docker socket (and the socket's group), so the job's step containers are the engine's own siblings. Each
container runs as Kubernetes' restricted profile would: non-root, read-only root with a /tmp tmpfs, no
capabilities, no privilege escalation.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import EXAMPLES, SCOPE, poll
from tests.natsserver import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("HADES_TEST_IMAGE", "hades:dev")
DOCKER_SOCKET = Path("/var/run/docker.sock")


@pytest.fixture(scope="module")
def hades_image(docker_client: Any) -> str:
    """Build the image from the working tree with `make image`'s script (cached layers make a rebuild quick),
    unless HADES_TEST_IMAGE names one already built."""
    if "HADES_TEST_IMAGE" not in os.environ:
        python = ROOT / ".venv" / "bin" / "python"
        env = {**os.environ, "IMAGE": IMAGE, "PYTHON": str(python if python.exists() else "python3")}
        build = subprocess.run(["bash", "tools/build_image.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert build.returncode == 0, build.stderr[-4000:]
    return IMAGE


def run_in_image(image: str, *command: str) -> str:
    out = subprocess.run(["docker", "run", "--rm", image, *command], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_image_runs_as_a_numeric_non_root_user_without_build_tools(hades_image: str) -> None:
    config = json.loads(subprocess.run(["docker", "image", "inspect", hades_image], capture_output=True).stdout)[0]
    assert config["Config"]["User"] == "10001:10001"  # numeric, so the kubelet can check runAsNonRoot
    assert config["Config"]["Cmd"] == ["python", "-m", "functions.submit"]
    found = run_in_image(
        hades_image, "sh", "-c", "id -u; for t in pip pip3 gcc cc make apt-get; do command -v $t || true; done"
    ).split()
    assert found[0] == "10001"
    assert [t for t in found[1:] if not t.endswith("apt-get")] == []  # apt stays: it is Debian's, it needs root
    no_pip = subprocess.run(["docker", "run", "--rm", hades_image, "python", "-c", "import pip"], capture_output=True)
    assert no_pip.returncode != 0, "pip must not be in the final image"


def test_every_locked_dependency_is_what_the_image_has(hades_image: str) -> None:
    listed = json.loads(
        run_in_image(
            hades_image,
            "python",
            "-c",
            "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name'].lower().replace('_', '-'):"
            " d.version for d in m.distributions()}))",
        )
    )
    locked = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")) and "==" in line:
            name, version = line.split(";")[0].strip(" \\").split("==")
            locked[name.lower().replace("_", "-")] = version
    assert listed == locked


class Containers:
    """Starts function containers and removes them (with their logs printed on failure) at the end."""

    def __init__(self, image: str, nats_url: str) -> None:
        self.image = image
        self.nats_url = nats_url
        self.names: list[str] = []

    def start(self, function: str, *extra: str, **env: str) -> str:
        name = f"hades-image-test-{function}-{os.getpid()}-{len(self.names)}"
        args = ["docker", "run", "--detach", "--name", name, "--network", "host"]
        # What the restricted Pod Security profile and readOnlyRootFilesystem impose in the manifests.
        args += ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        for key, value in {"HADES_NATS_URL": self.nats_url, "HADES_SCOPE": SCOPE, **env}.items():
            args += ["--env", f"{key}={value}"]
        subprocess.run(
            [*args, *extra, self.image, "python", "-m", f"functions.{function}"], check=True, capture_output=True
        )
        self.names.append(name)
        return name

    def logs(self) -> str:
        return "\n".join(
            f"--- {n}\n" + subprocess.run(["docker", "logs", "--tail", "50", n], capture_output=True, text=True).stderr
            for n in self.names
        )

    def stop(self, name: str) -> int:
        subprocess.run(["docker", "stop", "--time", "30", name], check=True, capture_output=True)
        state = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.ExitCode}}", name], capture_output=True, text=True
        )
        return int(state.stdout.strip())

    def remove_all(self) -> None:
        for name in self.names:
            subprocess.run(["docker", "rm", "--force", name], capture_output=True)


@pytest.fixture
def containers(hades_image: str, clean_nats: str) -> Iterator[Containers]:
    started = Containers(hades_image, clean_nats)
    yield started
    started.remove_all()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    try:
        async with session.get(url) as response:
            body = await response.json(content_type=None) if "json" in response.content_type else await response.text()
            return response.status, body
    except aiohttp.ClientError:
        return 0, None


async def test_the_three_functions_run_from_the_image_and_run_the_example_job(
    containers: Containers, busybox_image: str
) -> None:
    ports = {"submit": free_port(), "logs": free_port(), "dispatch": free_port()}
    env = {
        "HADES_SUBMIT_PORT": str(ports["submit"]),
        "HADES_LOGS_PORT": str(ports["logs"]),
        "HADES_DISPATCH_PORT": str(ports["dispatch"]),
        "HADES_PULL_TIMEOUT_SECONDS": "0.5",
    }
    containers.start("submit", **env)
    containers.start("logs", **env)
    # dispatch runs steps on the host's engine: the socket, and its group so uid 10001 may use it.
    socket_gid = str(os.stat(DOCKER_SOCKET).st_gid)
    dispatch = containers.start(
        "dispatch", "--volume", f"{DOCKER_SOCKET}:/var/run/docker.sock", "--group-add", socket_gid, **env
    )
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    async with aiohttp.ClientSession() as session:
        try:
            for name in ports:

                async def healthy(name: str = name) -> bool:
                    return (await _get(session, f"{base[name]}/healthz"))[0] == 200

                async def ready(name: str = name) -> bool:
                    return (await _get(session, f"{base[name]}/readyz"))[0] == 200

                await poll(healthy, timeout_s=60, interval_s=0.5)
                await poll(ready, timeout_s=60, interval_s=0.5)

            job = json.loads((EXAMPLES / "valid" / "hello.json").read_text())
            job["steps"][0]["image"] = busybox_image  # no registry here: alpine cannot be pulled
            async with session.post(f"{base['submit']}/jobs", json=job) as response:
                assert response.status == 202, await response.text()
                job_id = (await response.json())["id"]

            async def ended() -> Any:
                status, record = await _get(session, f"{base['logs']}/jobs/{job_id}")
                return record if status == 200 and record["status"] not in ("queued", "running") else None

            record = await poll(ended, timeout_s=90, interval_s=0.5)
            assert record["status"] == "succeeded", record
            status, text = await _get(session, f"{base['logs']}/jobs/{job_id}/logs?format=text")
            assert status == 200 and "Hello, Hades!" in text
            status, metrics = await _get(session, f"{base['dispatch']}/metrics")
            assert status == 200 and "hades_jobs_finished_total" in metrics
        except BaseException:
            print(containers.logs())
            raise
    started = time.monotonic()
    assert containers.stop(dispatch) == 0  # SIGTERM: a clean, prompt exit when idle
    assert time.monotonic() - started < 25
