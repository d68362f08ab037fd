"""The listing index (``functions/logs/jobindex``): complete first pages, time ranges, stable cursors, and every logs
replica right whatever collector wrote the records, across restarts."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from nats.js import JetStreamContext

from functions.logs import jobindex, listing, records
from functions.logs.handlers import create_app
from functions.logs.recordstore import RECORDS, RecordStore
from runtime import messaging, subjects
from runtime.errors import Unavailable
from runtime.jobs import JobStatus
from runtime.messaging import encode, topology
from runtime.settings import Settings
from tests.fakes import submitted
from tests.helpers import poll
from tests.listings import page_through, write_all


def a_record(index: int, *, status: str = "queued", submitted_at: str | None = None) -> records.JobRecord:
    record = records.new_record(str(uuid.uuid4()))
    record.update(status=status, name=f"build-{index:05d}", submitted_at=submitted_at)
    return record


async def rewrite(store: RecordStore, record: records.JobRecord, **changes: Any) -> None:
    entry = await store.bucket.get(record["id"])
    assert entry is not None
    record.update(changes)  # type: ignore[typeddict-item]
    await store.bucket.put(record["id"], encode(record), revision=entry.revision)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, conn: messaging.Messaging) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def test_a_rare_match_deep_in_the_bucket_is_on_the_first_page(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the index, a page stopped after SCAN_BUDGET records read: these first pages came back empty.
    monkeypatch.setattr(listing, "SCAN_BUDGET", 100)
    store = client.app[RECORDS]
    made = [a_record(i) for i in range(3_000)]
    made[5]["status"] = "failed"
    made[7]["name"] = "Rare-Name"
    await write_all(store, made)

    failed = await (await client.get("/jobs?status=failed&limit=10")).json()
    assert [job["id"] for job in failed["jobs"]] == [made[5]["id"]] and failed["next"] is None
    named = await (await client.get("/jobs?name=rare-n&limit=10")).json()
    assert [job["id"] for job in named["jobs"]] == [made[7]["id"]] and named["next"] is None
    # a filter matching many fills its page, with a cursor to the rest
    builds = await (await client.get("/jobs?name=build-00&limit=50&status=queued")).json()
    assert len(builds["jobs"]) == 50 and builds["next"]


async def test_a_time_range_lists_the_jobs_submitted_within_it(client: TestClient) -> None:
    store = client.app[RECORDS]
    made = [a_record(i, submitted_at=f"2026-01-01T{i:02d}:00:00.000Z") for i in range(10)]
    made.append(a_record(99))  # no submission time: outside every range
    await write_all(store, made)

    body = await (
        await client.get("/jobs?submitted_after=2026-01-01T03:00:00Z&submitted_before=2026-01-01T06:00:00%2B00:00")
    ).json()
    assert [job["id"] for job in body["jobs"]] == [made[5]["id"], made[4]["id"], made[3]["id"]]
    since = await (await client.get("/jobs?submitted_after=2026-01-01T08:00:00")).json()  # no zone: UTC
    assert [job["id"] for job in since["jobs"]] == [made[9]["id"], made[8]["id"]]

    response = await client.get("/jobs?submitted_after=yesterday")
    assert response.status == 400
    problem = await response.json()
    assert "submitted_after" in problem["detail"] and "ISO 8601" in problem["detail"]


async def test_cursors_stay_stable_while_records_change(client: TestClient, js: JetStreamContext) -> None:
    store = client.app[RECORDS]
    made = [a_record(i) for i in range(300)]
    await write_all(store, made)
    newest_first = [r["id"] for r in reversed(made)]

    first = await (await client.get("/jobs?limit=100")).json()
    assert [job["id"] for job in first["jobs"]] == newest_first[:100]

    # While the client pages on: a job from the first page and one not yet listed change (each moves to the top),
    # one not yet listed is deleted, and new jobs arrive.
    await rewrite(store, made[250], status="running")
    await rewrite(store, made[10], status="running")
    await (await js.key_value(subjects.RECORDS_BUCKET)).delete(made[20]["id"])
    await write_all(store, [a_record(1000 + i) for i in range(5)])

    rest: list[str] = []
    cursor = first["next"]
    while cursor:
        body = await (await client.get(f"/jobs?limit=100&cursor={cursor}")).json()
        rest += [job["id"] for job in body["jobs"]]
        cursor = body["next"]
    # Every job below the cursor exactly once, in the same order; the changed ones left for a new first page.
    gone = {made[10]["id"], made[20]["id"]}
    assert rest == [job_id for job_id in newest_first[100:] if job_id not in gone]
    top = await (await client.get("/jobs?limit=7")).json()
    assert [job["id"] for job in top["jobs"]][5:] == [made[10]["id"], made[250]["id"]]


async def test_every_replica_lists_right_across_collector_restarts(
    aiohttp_client: Any, settings: Settings, conn: messaging.Messaging
) -> None:
    first = await aiohttp_client(create_app(settings))
    second = await aiohttp_client(create_app(settings))
    jobs = [await submitted(conn, name=f"replica-{i}") for i in range(20)]

    async def listed(client: TestClient, query: str) -> set[str]:
        return {job_id for page in await page_through(client, query) for job_id in page}

    async def all_agree(query: str, expected: set[str]) -> bool:
        return all([await listed(client, query) == expected for client in clients])

    clients = [first, second]
    everyone = {job.id for job in jobs}
    await poll(lambda: all_agree("status=queued&name=replica-&limit=7", everyone), timeout_s=30)

    # One replica (and its collector) stops; the other collector folds what happens meanwhile.
    await first.close()
    clients = [second]
    for job in jobs[:10]:
        await job.running()
    await poll(lambda: all_agree("status=running&name=replica-", {job.id for job in jobs[:10]}), timeout_s=30)

    # It comes back: a new index, rebuilt from the bucket, and its collector takes part again.
    third = await aiohttp_client(create_app(settings))
    clients = [second, third]
    for job in jobs[10:15]:
        await job.finish(JobStatus.FAILED)
    await poll(lambda: all_agree("status=running", {job.id for job in jobs[:10]}), timeout_s=30)
    await poll(lambda: all_agree("status=failed&name=REPLICA", {job.id for job in jobs[10:15]}), timeout_s=30)
    await poll(lambda: all_agree("status=queued", {job.id for job in jobs[15:]}), timeout_s=30)
    index = third.app[jobindex.JOB_INDEX].index
    assert {e.job_id for e in index.newest_first(jobindex.Filter(), below=None)} == everyone


async def test_a_narrow_time_range_pages_through_its_jobs_once_while_they_change(client: TestClient) -> None:
    store = client.app[RECORDS]
    # Submitted a minute apart, written in an order of their own: the range is looked up by time, listed by write.
    made = [a_record(i, submitted_at=f"2026-01-01T{i // 60:02d}:{i % 60:02d}:00Z") for i in range(200)]
    order = made[100:] + made[:100]
    await write_all(store, order)
    in_range = [
        r["id"] for r in reversed(order) if "2026-01-01T00:10:00Z" <= r["submitted_at"] < "2026-01-01T00:20:00Z"
    ]
    assert len(in_range) == 10
    query = "submitted_after=2026-01-01T00:10:00Z&submitted_before=2026-01-01T00:20:00Z&limit=3"

    first = await (await client.get(f"/jobs?{query}")).json()
    assert [job["id"] for job in first["jobs"]] == in_range[:3]
    await rewrite(store, made[15], status="running")  # not listed yet: it moves to the top
    rest: list[str] = []
    cursor = first["next"]
    while cursor:
        body = await (await client.get(f"/jobs?{query}&cursor={cursor}")).json()
        rest += [job["id"] for job in body["jobs"]]
        cursor = body["next"]
    assert rest == [job_id for job_id in in_range[3:] if job_id != made[15]["id"]]
    top = await (await client.get(f"/jobs?{query}")).json()
    assert top["jobs"][0]["id"] == made[15]["id"]


async def test_a_replica_forgets_the_records_the_bucket_let_expire(
    aiohttp_client: Any, settings: Settings, conn: messaging.Messaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bucket's TTL removes a record without a delete marker: the index kept every job a replica ever saw
    # (memory growing for as long as it ran, and pages walking past jobs that are gone).
    monkeypatch.setattr(jobindex, "EXPIRY_CHECK_EVERY_S", 0.0, raising=False)
    bucket_config = topology.records_bucket_config
    monkeypatch.setattr(topology, "records_bucket_config", lambda s: dataclasses.replace(bucket_config(s), ttl=1.0))
    client = await aiohttp_client(create_app(settings))
    store = client.app[RECORDS]
    await write_all(store, [a_record(i) for i in range(5)])
    indexed = client.app[jobindex.JOB_INDEX]
    await poll(lambda: _indexed(indexed, 5), timeout_s=10)

    async def forgotten() -> bool:  # the records expire after 1 s; the index forgets them unasked
        return len(indexed.index) == 0 and not indexed.index.by_job

    await poll(forgotten, timeout_s=15)
    assert (await (await client.get("/jobs")).json())["jobs"] == []


async def _indexed(indexed: jobindex.IndexedBucket, count: int) -> bool:
    return len(indexed.index) == count


@pytest.mark.parametrize("written_again", [2, 12])  # fewer writes than before, and more
async def test_a_replica_lists_the_new_jobs_after_the_bucket_was_deleted_and_made_again(
    client: TestClient, settings: Settings, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch, written_again: int
) -> None:
    # A bucket made again starts its sequences at 1: the index took every new write for a repeat of one it had
    # applied, and listed none of the new jobs until the replica restarted.
    monkeypatch.setattr(jobindex, "EXPIRY_CHECK_EVERY_S", 0.0, raising=False)
    store = client.app[RECORDS]
    await write_all(store, [a_record(i) for i in range(5)])
    await poll(lambda: _indexed(client.app[jobindex.JOB_INDEX], 5), timeout_s=10)

    await js.delete_stream(store.bucket.stream)
    await RecordStore.open(store.conn, settings)
    again = [a_record(i) for i in range(written_again)]
    await write_all(store, again)

    async def listed_from_the_index() -> bool:
        jobs = (await (await client.get("/jobs")).json())["jobs"]
        index = client.app[jobindex.JOB_INDEX].index
        return {job["id"] for job in jobs} == {r["id"] for r in again} == set(index.by_job)

    await poll(listed_from_the_index, timeout_s=20)


async def test_an_index_that_could_not_start_starts_later(
    aiohttp_client: Any, settings: Settings, conn: messaging.Messaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watch failed to start once (NATS away at that moment): every listing scanned until the replica restarted.
    monkeypatch.setattr(jobindex, "EXPIRY_CHECK_EVERY_S", 0.0, raising=False)
    watch = messaging.Messaging.watch
    failures = [Unavailable("watching: the message broker is not reachable")]

    async def flaky_watch(self: messaging.Messaging, *args: Any) -> Any:
        if failures:
            raise failures.pop()
        return await watch(self, *args)

    monkeypatch.setattr(messaging.Messaging, "watch", flaky_watch)
    client = await aiohttp_client(create_app(settings))
    assert not failures
    await write_all(client.app[RECORDS], [a_record(i) for i in range(3)])
    await poll(lambda: _indexed(client.app[jobindex.JOB_INDEX], 3), timeout_s=15)
