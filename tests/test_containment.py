"""Issue 13, finding 12: containment options of the step containers — a non-root user, a read-only root file
system, and a size limit on /shared — on a real engine, plus the settings that switch them on."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from functions.dispatch.executors.base import RunResult, StepResult, StopSignal
from functions.dispatch.executors.docker import DockerExecutor, shared_volume_options
from runtime.jobs import Job, JobId, JobStatus, Step, StepStatus, job_from_document, utc_now
from runtime.settings import LimitSettings, Settings, SettingsError
from tests.dockerfixtures import BUSYBOX_BINARY
from tests.helpers import SCOPE


@dataclass
class Hooks:
    finished: list[StepResult] = field(default_factory=list)
    lines: list[tuple[int, str, str]] = field(default_factory=list)

    async def step_started(self, step: Step, *, started_at: str) -> None:
        pass

    async def step_finished(self, result: StepResult) -> None:
        self.finished.append(result)

    def log(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        self.lines.append((step_id, stream, message))

    def output(self, step_id: int) -> list[str]:
        return [message for sid, _, message in self.lines if sid == step_id]


@pytest.fixture
async def executor_with() -> AsyncIterator[Callable[..., Any]]:
    """``await executor_with(HADES_…=…)``: a Docker executor with these settings, closed afterwards."""
    made: list[DockerExecutor] = []

    async def make(**env: str) -> DockerExecutor:
        executor = await DockerExecutor.create(Settings.from_env({"HADES_SCOPE": SCOPE, **env}))
        made.append(executor)
        return executor

    yield make
    for executor in made:
        await executor.close()


async def release(result: RunResult) -> None:
    """What dispatch does once the job's end is stored: remove what the run made."""
    if result.release is not None:
        await result.release()


def make_job(image: str, *scripts: str) -> Job:
    steps = [{"id": i, "image": image, "script": script} for i, script in enumerate(scripts, start=1)]
    document = {"name": "containment", "steps": steps}
    return job_from_document(document, job_id=JobId(str(uuid.uuid4())), limits=LimitSettings(), submitted_at=utc_now())


# -- settings --------------------------------------------------------------------------------------------------


def test_the_defaults_keep_the_images_user_a_writable_root_and_an_unlimited_shared() -> None:
    dispatch = Settings.from_env({}).dispatch
    assert (dispatch.step_user, dispatch.step_read_only_root, dispatch.shared_max_bytes) == ("", False, 0)
    assert shared_volume_options(0, "") == {}  # a plain disk volume, as before


def test_the_settings_are_read_and_checked() -> None:
    dispatch = Settings.from_env(
        {"HADES_STEP_USER": "65534:65534", "HADES_STEP_READ_ONLY_ROOT": "true", "HADES_SHARED_MAX_BYTES": "1048576"}
    ).dispatch
    assert (dispatch.step_user, dispatch.step_read_only_root, dispatch.shared_max_bytes) == (
        "65534:65534",
        True,
        1048576,
    )
    for bad in (
        {"HADES_STEP_USER": "nobody"},
        {"HADES_STEP_READ_ONLY_ROOT": "maybe"},
        {"HADES_SHARED_MAX_BYTES": "-1"},
    ):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)


def test_a_limited_or_non_root_shared_is_a_tmpfs_owned_by_the_step_user() -> None:
    assert shared_volume_options(1048576, "") == {"type": "tmpfs", "device": "tmpfs", "o": "nosuid,nodev,size=1048576"}
    options = shared_volume_options(0, "1000")
    assert options["o"] == "nosuid,nodev,uid=1000,gid=1000,mode=0755"


# -- on the engine ---------------------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.timeout(60)
async def test_writing_past_the_shared_limit_fails_the_step_with_no_space_left(
    executor_with: Callable[..., Any], busybox_image: str
) -> None:
    executor = await executor_with(HADES_SHARED_MAX_BYTES=str(1024 * 1024))
    job = make_job(busybox_image, "dd if=/dev/zero of=/shared/big bs=65536 count=64 2>&1; echo written $(du -k big)")
    hooks = Hooks()
    result = await executor.run(job, attempt=1, hooks=hooks, stop=StopSignal())
    await release(result)

    # dd's status is lost behind the echo: the script decides; what /shared holds is what matters.
    out = "\n".join(hooks.output(1))
    assert "No space left on device" in out, out
    written_kib = int(out.rsplit("written ", 1)[1].split()[0])
    assert written_kib <= 1024, out
    assert result.status is JobStatus.SUCCEEDED


@pytest.mark.docker
@pytest.mark.timeout(60)
async def test_a_step_that_stops_on_the_full_shared_fails_with_its_exit_code(
    executor_with: Callable[..., Any], busybox_image: str
) -> None:
    executor = await executor_with(HADES_SHARED_MAX_BYTES=str(1024 * 1024))
    job = make_job(busybox_image, "set -e; dd if=/dev/zero of=/shared/big bs=65536 count=64; echo never")
    hooks = Hooks()
    result = await executor.run(job, attempt=1, hooks=hooks, stop=StopSignal())
    await release(result)

    assert result.status is JobStatus.FAILED
    assert hooks.finished[0].status is StepStatus.FAILED and hooks.finished[0].exit_code != 0
    assert any("No space left on device" in line for line in hooks.output(1)), hooks.lines
    assert "never" not in hooks.output(1)


@pytest.mark.docker
@pytest.mark.timeout(60)
async def test_steps_run_as_the_configured_user_and_share_a_writable_shared(
    executor_with: Callable[..., Any], busybox_image: str
) -> None:
    executor = await executor_with(HADES_STEP_USER="65534:65534")
    job = make_job(busybox_image, "id -u; id -g; echo kept > /shared/f", "id -u; cat /shared/f")
    hooks = Hooks()
    result = await executor.run(job, attempt=1, hooks=hooks, stop=StopSignal())
    await release(result)

    assert result.status is JobStatus.SUCCEEDED, (result, hooks.lines)
    assert hooks.output(1) == ["65534", "65534"]
    assert hooks.output(2) == ["65534", "kept"]


@pytest.mark.docker
@pytest.mark.timeout(60)
async def test_a_read_only_root_leaves_tmp_and_shared_writable(
    executor_with: Callable[..., Any], busybox_image: str
) -> None:
    executor = await executor_with(HADES_STEP_READ_ONLY_ROOT="true")
    script = (
        "touch /etc/hades 2>/dev/null && echo root-writable || echo root-refused; "
        "touch /tmp/t && echo tmp-ok; echo s > /shared/s && echo shared-ok"
    )
    hooks = Hooks()
    result = await executor.run(make_job(busybox_image, script), attempt=1, hooks=hooks, stop=StopSignal())
    await release(result)

    assert result.status is JobStatus.SUCCEEDED, (result, hooks.lines)
    assert hooks.output(1) == ["root-refused", "tmp-ok", "shared-ok"]


NO_SHELL_IMAGE = "hades-test-no-shell:1"


@pytest.fixture
def no_shell_image(docker_client: Any, busybox_image: str) -> Iterator[str]:
    """An image with no ``sh``: only a static busybox at /busybox, which its own command runs."""
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(BUSYBOX_BINARY, Path(context) / "busybox")
        (Path(context) / "Dockerfile").write_text('FROM scratch\nCOPY busybox /busybox\nCMD ["/busybox", "true"]\n')
        docker_client.images.build(path=context, tag=NO_SHELL_IMAGE, rm=True)
    yield NO_SHELL_IMAGE
    docker_client.images.remove(NO_SHELL_IMAGE, force=True)


@pytest.mark.docker
@pytest.mark.timeout(60)
async def test_a_first_step_without_a_shell_runs_with_a_limited_shared(
    executor_with: Callable[..., Any], busybox_image: str, no_shell_image: str
) -> None:
    """Issue 20: with HADES_SHARED_MAX_BYTES set, /shared was held by a container running ``sh`` from the first
    step's image, so a first step whose image has none failed the job before it ran."""
    executor = await executor_with(HADES_SHARED_MAX_BYTES=str(1024 * 1024))
    steps = [{"id": 1, "image": no_shell_image, "script": ""}, {"id": 2, "image": busybox_image, "script": "echo ok"}]
    document = {"name": "no shell", "steps": steps}
    job = job_from_document(document, job_id=JobId(str(uuid.uuid4())), limits=LimitSettings(), submitted_at=utc_now())
    hooks = Hooks()

    result = await executor.run(job, attempt=1, hooks=hooks, stop=StopSignal())
    await release(result)

    assert result.status is JobStatus.SUCCEEDED, result
    assert hooks.output(2) == ["ok"]
