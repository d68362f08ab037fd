"""Issue 13, findings 1 and 11: image pulls and callbacks never reach loopback, link-local or private addresses
unless the operator opens them."""

from __future__ import annotations

import ipaddress
import json
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from aiohttp.test_utils import TestClient, TestServer

from functions.dispatch.executors.base import StepResult, StopSignal
from functions.dispatch.executors.docker import DockerExecutor
from functions.dispatch.executors.docker import engine as docker_engine
from functions.dispatch.executors.k8s.executor import KubernetesExecutor
from functions.logs import callbacks
from functions.logs.handlers import create_app as create_logs
from functions.submit.handlers import create_app as create_submit
from runtime import messaging, netguard
from runtime.errors import JobError
from runtime.jobs import Job, JobId, Step, job_from_document, utc_now
from runtime.settings import LimitSettings, Settings
from tests.fakes import FakeDispatch, new_job
from tests.helpers import EXAMPLES, SCOPE, make_settings, poll

HELLO = json.loads((EXAMPLES / "valid" / "hello.json").read_text())
INTERNAL_IMAGES = [
    "127.0.0.1:5000/x:y",
    "127.1:5000/x:y",  # inet_aton shorthand for 127.0.0.1
    "2130706433:5000/x",  # 127.0.0.1 as one number
    "localhost:5000/x",
    "localhost/x",
    "registry.localhost/x",
    "[::1]:5000/x",
    "[::ffff:127.0.0.1]:5000/x",
    "169.254.169.254/latest:meta",
    "10.0.0.7:5000/team/x",
    "192.168.1.2/x",
    "172.16.0.1/x",
    "100.64.0.1/x",
    "0.0.0.0:5000/x",
    "[fe80::1]/x",
    "[fd00::1]:5000/x",
]
PUBLIC_IMAGES = ["hades-test-busybox:1", "alpine:3", "library/alpine", "ghcr.io/org/x:1", "8.8.8.8:5000/x", "a/b/c"]


# --- the shared check ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", INTERNAL_IMAGES)
def test_an_image_on_an_internal_registry_is_refused(image: str) -> None:
    refusal = netguard.image_refusal(image, ())
    assert refusal is not None and "loopback, link-local or private" in refusal


@pytest.mark.parametrize("image", PUBLIC_IMAGES)
def test_images_of_public_registries_and_local_images_are_allowed(image: str) -> None:
    assert netguard.image_refusal(image, ()) is None


def test_operator_patterns_allow_only_what_they_match_and_can_open_an_internal_registry() -> None:
    patterns = ("docker.io/library/*", "10.0.0.7:5000/team/*", "hades-test-*")
    assert netguard.image_refusal("alpine:3", patterns) is None  # matched as docker.io/library/alpine:3
    assert netguard.image_refusal("10.0.0.7:5000/team/x", patterns) is None  # opened on purpose
    assert netguard.image_refusal("hades-test-busybox:1", patterns) is None
    for refused in ("ghcr.io/org/x", "10.0.0.7:5000/other/x", "127.0.0.1:5000/x", "someone/alpine"):
        assert "HADES_ALLOWED_IMAGES" in (netguard.image_refusal(refused, patterns) or "")


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        ("127.0.0.1", True),
        ("169.254.169.254", True),
        ("10.1.2.3", True),
        ("fe80::1", True),
        ("::1", True),
        ("::ffff:10.0.0.1", True),
        ("8.8.8.8", False),
        ("2a00:1450:4001::1", False),
    ],
)
def test_internal_addresses(address: str, internal: bool) -> None:
    assert netguard.internal_address(ipaddress.ip_address(address)) is internal


# --- finding 1 at submit: 422 naming the step's image --------------------------------------------------------


@pytest.fixture
async def submit(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    served: TestClient[Any, Any] = await aiohttp_client(create_submit(settings))
    return served


async def test_submit_refuses_a_step_image_on_a_loopback_registry_with_422(submit: TestClient[Any, Any]) -> None:
    steps = [{**HELLO["steps"][0], "id": 1}, {**HELLO["steps"][0], "id": 2, "image": "127.0.0.1:5000/x:y"}]
    response = await submit.post("/jobs", json={**HELLO, "steps": steps})
    assert response.status == 422, await response.text()
    assert response.content_type == "application/problem+json"
    [violation] = (await response.json())["errors"]
    assert violation["path"] == "/steps/1/image" and "loopback, link-local or private" in violation["message"]


async def test_build_refuses_it_too(submit: TestClient[Any, Any]) -> None:
    original = json.loads((EXAMPLES / "valid" / "original-build.json").read_text())
    original["steps"][0]["image"] = "169.254.169.254/x"
    response = await submit.post("/build", json=original)
    assert response.status == 400
    assert "/steps/0/image" in await response.text()


async def test_the_local_test_image_is_still_accepted(submit: TestClient[Any, Any]) -> None:
    response = await submit.post(
        "/jobs", json={**HELLO, "steps": [{**HELLO["steps"][0], "image": "hades-test-busybox:1"}]}
    )
    assert response.status == 202


async def test_an_operator_pattern_list_refuses_other_images_at_submit(aiohttp_client: Any, clean_nats: str) -> None:
    settings = make_settings(clean_nats, HADES_ALLOWED_IMAGES="registry.example/*")
    client = await aiohttp_client(create_submit(settings))
    refused = await client.post("/jobs", json=HELLO)
    assert refused.status == 422
    assert [e["path"] for e in (await refused.json())["errors"]] == ["/steps/0/image"]
    allowed = await client.post(
        "/jobs", json={**HELLO, "steps": [{**HELLO["steps"][0], "image": "registry.example/x"}]}
    )
    assert allowed.status == 202


# --- finding 1 at dispatch: checked again before pulling -----------------------------------------------------


class Hooks:
    async def step_started(self, step: Step, *, started_at: str) -> None:
        raise AssertionError(f"step {step.id} must not start")

    async def step_finished(self, result: StepResult) -> None:
        raise AssertionError("no step may finish")

    def log(self, step_id: int, stream: str, message: str, *, at: str) -> None:
        raise AssertionError("no output expected")


def _job(image: str) -> Job:
    document = {"name": "address test", "steps": [{"id": 1, "image": image, "script": "true"}]}
    return job_from_document(document, job_id=JobId(str(uuid.uuid4())), limits=LimitSettings(), submitted_at=utc_now())


@pytest.mark.docker
async def test_the_docker_executor_refuses_an_internal_registry_without_pulling(
    busybox_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulled: list[str] = []
    monkeypatch.setattr(docker_engine, "_pull", lambda api, image, timeout_s: pulled.append(image))
    executor = await DockerExecutor.create(Settings.from_env({"HADES_SCOPE": SCOPE}))
    try:
        with pytest.raises(JobError, match=r"127\.0\.0\.1:1/x:y.*loopback, link-local or private"):
            await executor.run(_job("127.0.0.1:1/x:y"), attempt=1, hooks=Hooks(), stop=StopSignal())
    finally:
        await executor.close()
    assert pulled == []


@pytest.mark.docker
async def test_the_docker_executor_applies_the_current_policy_to_a_queued_job(busybox_image: str) -> None:
    # Submitted under an open policy, dispatched after the operator narrowed it: refused at dispatch.
    settings = Settings.from_env({"HADES_SCOPE": SCOPE, "HADES_ALLOWED_IMAGES": "registry.example/*"})
    executor = await DockerExecutor.create(settings)
    try:
        with pytest.raises(JobError, match="HADES_ALLOWED_IMAGES"):
            await executor.run(_job(busybox_image), attempt=1, hooks=Hooks(), stop=StopSignal())
    finally:
        await executor.close()


async def test_the_kubernetes_executor_refuses_an_internal_registry_before_creating_a_job() -> None:
    class NoApi:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the API must not be used ({name})")

    settings = Settings.from_env({"HADES_SCOPE": SCOPE, "HADES_EXECUTOR": "kubernetes"})
    executor = KubernetesExecutor(NoApi(), settings=settings)  # type: ignore[arg-type]
    with pytest.raises(JobError, match=r"169\.254\.169\.254/x.*loopback, link-local or private"):
        await executor.run(_job("169.254.169.254/x"), attempt=1, hooks=Hooks(), stop=StopSignal())


# --- finding 11: callbacks -------------------------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.read())
        return web.Response(status=204)

    def url(self, host: str = "127.0.0.1") -> str:
        assert self.server is not None
        return f"http://{host}:{self.server.port}/results"


@pytest.fixture
async def receiver(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> Receiver:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/results", found.handle)
    found.server = await aiohttp_server(app)
    return found


async def _logs(aiohttp_client: Any, clean_nats: str, **env: str) -> TestClient[Any, Any]:
    settings = make_settings(clean_nats, HADES_CALLBACK_BACKOFF_SECONDS="0.01", HADES_CALLBACK_MAX_ATTEMPTS="2", **env)
    client: TestClient[Any, Any] = await aiohttp_client(create_logs(settings))
    return client


async def _callback(client: TestClient[Any, Any], conn: messaging.Messaging, url: str) -> dict[str, Any]:
    dispatch = FakeDispatch(conn, new_job(callback_url=url))
    await dispatch.submit()
    await dispatch.run({1: ["built"], 2: ["tested"]})

    async def done() -> dict[str, Any] | None:
        response = await client.get(f"/jobs/{dispatch.id}")
        if response.status != 200:
            return None
        callback: dict[str, Any] = (await response.json())["callback"]
        return callback if callback["state"] == "done" else None

    return await poll(done, timeout_s=15)


async def test_callbacks_to_internal_addresses_are_refused_by_default_and_say_only_that(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver
) -> None:
    client = await _logs(aiohttp_client, clean_nats)
    closed_port = "http://127.0.0.1:9/scan"
    targets = [receiver.url(), closed_port, receiver.url("localhost"), "http://169.254.169.254/latest/meta-data"]
    found = [await _callback(client, conn, url) for url in targets]
    for callback in found:
        assert callback["outcome"] == "refused" and callback["attempts"] == 0
        assert callback["last_error"] == callbacks.REFUSED_BY_POLICY  # an open and a closed port look the same
        assert callback.get("last_status") is None
    assert receiver.requests == []


async def test_an_allowed_network_opens_loopback_for_callbacks(
    aiohttp_client: Any, clean_nats: str, conn: messaging.Messaging, receiver: Receiver
) -> None:
    client = await _logs(aiohttp_client, clean_nats, HADES_CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8")
    callback = await _callback(client, conn, receiver.url())
    assert callback["outcome"] == "delivered" and len(receiver.requests) == 1
    # What stays refused: the metadata address is not in 127.0.0.0/8.
    refused = await _callback(client, conn, "http://169.254.169.254/latest/meta-data")
    assert refused["last_error"] == callbacks.REFUSED_BY_POLICY


class FakeResolver:
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0) for a in self.addresses
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("addresses", "allowed", "refused"),
    [
        (("93.184.215.14",), (), False),
        (("93.184.215.14", "10.0.0.5"), (), True),  # one internal address among public ones: the whole host
        (("169.254.169.254",), (), True),
        (("::ffff:127.0.0.1",), (), True),
        (("10.0.0.5",), ("10.0.0.0/8",), False),
        (("10.0.0.5", "127.0.0.1"), ("10.0.0.0/8",), True),
    ],
)
async def test_the_resolver_checks_every_address_and_hands_on_only_checked_ones(
    addresses: tuple[str, ...], allowed: tuple[str, ...], refused: bool
) -> None:
    resolver = netguard.GuardedResolver(netguard.networks(allowed))
    resolver._resolver = FakeResolver(*addresses)  # type: ignore[assignment]  # a name that resolves as given
    if refused:
        with pytest.raises(netguard.AddressRefused):
            await resolver.resolve("lms.example", 443)
    else:
        assert [r["host"] for r in await resolver.resolve("lms.example", 443)] == list(addresses)


def test_callback_networks_are_checked_at_start_up() -> None:
    with pytest.raises(ValueError, match="HADES_CALLBACK_ALLOWED_NETWORKS"):
        make_settings("nats://127.0.0.1:1", HADES_CALLBACK_ALLOWED_NETWORKS="10.0.0.0/33")
