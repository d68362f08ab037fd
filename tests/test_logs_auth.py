"""The logs API's optional read key: job routes closed without it, probes and metrics open."""

from __future__ import annotations

from typing import Any

from functions.logs.handlers import create_app
from tests.helpers import make_settings


async def test_with_a_logs_key_job_routes_need_it_and_probes_stay_open(aiohttp_client: Any, clean_nats: str) -> None:
    client = await aiohttp_client(create_app(make_settings(clean_nats, HADES_LOGS_API_KEY="read-only")))
    job = "/jobs/1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"
    for path in ("/jobs", job, f"{job}/status", f"{job}/logs", f"{job}/logs/stream"):
        response = await client.get(path)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    authorised = {"Authorization": "Bearer read-only"}
    assert (await client.get("/jobs", headers=authorised)).status == 200
    assert (await client.get(job, headers=authorised)).status == 404  # past the key: an unknown job
    for path in ("/health", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status == 200, path


async def test_without_a_key_the_api_is_open_as_the_original(aiohttp_client: Any, clean_nats: str) -> None:
    client = await aiohttp_client(create_app(make_settings(clean_nats)))
    assert (await client.get("/jobs")).status == 200
