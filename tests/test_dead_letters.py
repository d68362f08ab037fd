"""Dead letters an operator can act on: GET /dead-letters lists HADES_DEAD, POST …/redrive re-submits a dead job
under a new id, linked to the old one in both records. The job is dead-lettered for real: its dispatcher is
SIGKILLed mid-job with HADES_MAX_DELIVER=1, so the redelivery gives it up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from functions.logs import records
from functions.submit.handlers import create_app as create_submit
from runtime import events, jobs, subjects
from runtime.jobs import JobStatus
from runtime.messaging import encode
from runtime.settings import LimitSettings
from tests.faults.harness import Cluster, job
from tests.helpers import make_settings, poll
from tests.observe import StoredEvents

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


@pytest.fixture
async def cluster(clean_nats: str, tmp_path: Path, busybox_image: str) -> AsyncIterator[Cluster]:
    hades = Cluster.create(clean_nats, tmp_path, HADES_ACK_WAIT_SECONDS="2", HADES_MAX_DELIVER="1")
    try:
        await hades.start()
        yield hades
    finally:
        await hades.stop()


async def _json(answer: aiohttp.ClientResponse, status: int) -> Any:
    assert answer.status == status, await answer.text()
    return await answer.json()


async def test_a_dead_job_is_listed_redriven_and_runs_to_its_end(cluster: Cluster, stored: StoredEvents) -> None:
    submit, logs = cluster["submit"].url, cluster["logs"].url
    async with aiohttp.ClientSession() as http:
        body = job("echo working; sleep 3; echo done", name="dies once")
        dead_id = (await _json(await http.post(f"{submit}/jobs", json=body), 202))["id"]

        async def working() -> bool:
            return "working" in await stored.lines(dead_id)

        await poll(working, timeout_s=60)
        await cluster["dispatch"].kill()
        await cluster["dispatch"].start()  # the redelivery (past HADES_MAX_DELIVER) dead-letters the job
        final = await stored.terminal(dead_id, timeout_s=60)
        assert final["status"] == "failed" and "gave up after 1 attempts" in final["reason"]

        async def listed() -> list[dict[str, Any]]:
            return list((await _json(await http.get(f"{submit}/dead-letters"), 200))["dead_letters"])

        [letter] = await poll(listed, timeout_s=10)
        assert letter["id"] == dead_id and letter["name"] == "dies once" and letter["redriven_as"] is None
        assert letter["reason"] == "gave up after 1 attempts" and letter["dead_at"].endswith("Z")

        answer = await http.post(f"{submit}/dead-letters/{dead_id}/redrive")
        redriven = await _json(answer, 202)
        new_id = redriven["id"]
        assert new_id != dead_id and jobs.is_job_id(new_id) and redriven["redrive_of"] == dead_id
        assert answer.headers["Location"] == f"/jobs/{new_id}"

        again = await http.post(f"{submit}/dead-letters/{dead_id}/redrive")
        assert (await _json(again, 409))["detail"].endswith(f"already redriven as {new_id}")

        done = await stored.terminal(new_id, timeout_s=60)
        assert done["status"] == "succeeded" and done["attempt"] == 1
        assert await stored.lines(new_id) == ["working", "done"]

        async def record(job_id: str, **expected: Any) -> dict[str, Any] | None:
            async with http.get(f"{logs}/jobs/{job_id}") as got:
                found: dict[str, Any] = await got.json() if got.status == 200 else {}
            return found if all(found.get(k) == v for k, v in expected.items()) else None

        old = await poll(lambda: record(dead_id, status="failed", redriven_as=new_id), timeout_s=20)
        new = await poll(lambda: record(new_id, status="succeeded", redrive_of=dead_id), timeout_s=20)
        assert old["redrive_of"] is None and new["redriven_as"] is None
        assert old["finished_at"] and old["reason"] == final["reason"]

        # Both records have exactly the documented shape (the logs OpenAPI, every object closed).
        schemas = (await _json(await http.get(f"{logs}/openapi.json"), 200))["components"]["schemas"]
        closed = {name: {**schema, "additionalProperties": False} for name, schema in schemas.items()}
        for served in (old, new):
            jsonschema.validate(served, {"components": {"schemas": closed}, **closed["JobRecord"]})

        [letter] = await listed()
        assert letter["redriven_as"] == new_id
        # The list and the redrive answer have the shapes the submit OpenAPI documents.
        paths = (await _json(await http.get(f"{submit}/openapi.json"), 200))["paths"]
        listing = paths["/dead-letters"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate({"dead_letters": [letter], "count": 1}, listing)
        post = paths["/dead-letters/{job_id}/redrive"]["post"]["responses"]["202"]
        jsonschema.validate(redriven, post["content"]["application/json"]["schema"])


async def test_dead_letters_need_the_api_key_and_name_what_is_missing(aiohttp_client: Any, clean_nats: str) -> None:
    client = await aiohttp_client(create_submit(make_settings(clean_nats, HADES_API_KEY="s3cret")))
    unknown = str(jobs.new_job_id())
    assert (await client.get("/dead-letters")).status == 401
    assert (await client.post(f"/dead-letters/{unknown}/redrive")).status == 401
    auth = {"Authorization": "Bearer s3cret"}
    empty = await _json(await client.get("/dead-letters", headers=auth), 200)
    assert empty == {"dead_letters": [], "count": 0, "next_after": None}
    missing = await _json(await client.post(f"/dead-letters/{unknown}/redrive", headers=auth), 404)
    assert missing["type"].endswith("dead-letter-not-found") and unknown in missing["detail"]
    assert (await client.post("/dead-letters/not-a-job/redrive", headers=auth)).status == 404
    for limit in ("0", "x", "1001"):
        assert (await client.get(f"/dead-letters?limit={limit}", headers=auth)).status == 400


def test_the_links_reach_the_records_and_a_terminal_status_stays_final() -> None:
    dead, new = str(jobs.new_job_id()), str(jobs.new_job_id())
    now = jobs.utc_now()
    failed = events.job_event(dead, attempt=2, seq=1, status=JobStatus.FAILED, reason="infrastructure: gave up")
    record = records.apply_status(None, failed, now=now)
    link = events.job_event(dead, attempt=2, seq=2, status=JobStatus.FAILED, reason="other", redriven_as=new)
    linked = records.apply_status(record, link, now=now)
    assert linked is not None and linked["redriven_as"] == new
    assert (linked["status"], linked["reason"]) == ("failed", "infrastructure: gave up")
    assert records.apply_status(linked, link, now=now) is None  # applied twice: no change
    queued = events.job_event(new, attempt=0, seq=0, status=JobStatus.QUEUED, redrive_of=dead)
    fresh = records.apply_status(None, queued, now=now)
    assert fresh is not None and fresh["redrive_of"] == dead and fresh["redriven_as"] is None


async def test_dead_letters_page_on_past_any_limit(aiohttp_client: Any, clean_nats: str, conn: Any) -> None:
    client = await aiohttp_client(create_submit(make_settings(clean_nats)))
    dead = []
    for index in range(5):
        document = {"name": f"dead {index}", "steps": [{"id": 1, "image": "x"}]}
        job = jobs.job_from_document(
            document, job_id=jobs.new_job_id(), limits=LimitSettings(), submitted_at=jobs.utc_now()
        )
        await conn.publish(subjects.dead_subject(job.id), encode(job.to_message()), headers={"Hades-Reason": "gave up"})
        dead.append(job.id)
    seen, after, pages = [], 0, 0
    while after is not None:
        page = await _json(await client.get(f"/dead-letters?limit=2&after={after}"), 200)
        seen += [letter["id"] for letter in page["dead_letters"]]
        after, pages = page["next_after"], pages + 1
    assert seen == dead and pages == 3
    assert (await client.get("/dead-letters?after=-1")).status == 400
