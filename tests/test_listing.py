"""``GET /jobs`` at scale: newest written first, filtered by status and name, paged without reading everything."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from functions.logs import jobindex, listing, records
from functions.logs.handlers import create_app
from functions.logs.recordstore import RecordStore
from runtime import messaging
from runtime.messaging import Messaging, StoredMessage, encode
from runtime.settings import Settings
from tests.listings import page_through, write_all

RECORDS = 10_000


class ReadCounter:
    """Counts the stored messages every ``Messaging.read`` hands out (the store reads a listing makes)."""

    def __init__(self) -> None:
        self.messages = 0


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> ReadCounter:
    counter = ReadCounter()
    original = Messaging.read

    async def counted(self: Messaging, **kwargs: Any) -> AsyncGenerator[StoredMessage, None]:
        messages = original(self, **kwargs)
        try:
            async for message in messages:
                counter.messages += 1
                yield message
        finally:
            await messages.aclose()

    monkeypatch.setattr(Messaging, "read", counted)
    return counter


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, conn: messaging.Messaging) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def store(conn: messaging.Messaging, settings: Settings) -> AsyncIterator[RecordStore]:
    yield await RecordStore.open(conn, settings)


def a_record(index: int, *, status: str = "queued") -> records.JobRecord:
    record = records.new_record(str(uuid.uuid4()))
    record.update(status=status, name=f"build-{index:05d}" if index % 2 else f"test-{index:05d}")
    return record


async def test_paging_through_ten_thousand_records_reads_a_page_at_a_time(
    client: TestClient, store: RecordStore, reads: ReadCounter
) -> None:
    made = [a_record(i) for i in range(RECORDS)]
    await write_all(store, made)
    newest_first = {r["id"] for r in made}

    reads.messages = 0
    first = await (await client.get("/jobs?limit=100")).json()
    assert len(first["jobs"]) == 100 and first["next"]
    assert reads.messages < 400, f"the first page read {reads.messages} records"

    reads.messages = 0
    pages = await page_through(client, "limit=100")
    per_page = reads.messages / len(pages)
    assert per_page < 400, f"{per_page:.0f} records read per page"
    seen = [job_id for page in pages for job_id in page]
    assert len(seen) == RECORDS and set(seen) == newest_first  # each exactly once

    # a page in the middle costs no more than the first one
    reads.messages = 0
    middle = await (await client.get(f"/jobs?limit=100&cursor={first['next']}")).json()
    assert len(middle["jobs"]) == 100 and reads.messages < 400


async def test_newest_written_first_with_status_and_name_filters(
    client: TestClient, store: RecordStore, reads: ReadCounter
) -> None:
    made = [a_record(i) for i in range(2_000)]
    await write_all(store, made)
    # a status change rewrites a record: it becomes the newest written
    changed = made[10]
    entry = await store.bucket.get(changed["id"])
    assert entry is not None
    await store.bucket.put(changed["id"], encode({**changed, "status": "running"}), revision=entry.revision)

    body = await (await client.get("/jobs?limit=3")).json()
    assert [j["id"] for j in body["jobs"]] == [changed["id"], made[-1]["id"], made[-2]["id"]]

    running = await (await client.get("/jobs?status=Running")).json()
    assert [j["id"] for j in running["jobs"]] == [changed["id"]] and running["next"] is None

    reads.messages = 0
    builds = await (await client.get("/jobs?name=BUILD-01&limit=20&status=queued")).json()
    expected = [r["id"] for r in reversed(made) if r["name"].startswith("build-01") and r is not changed]
    assert [j["id"] for j in builds["jobs"]] == expected[:20]
    assert reads.messages < 1_000

    pages = await page_through(client, "name=test-0001&limit=4")
    assert changed["name"] == "test-00010"
    assert [job_id for page in pages for job_id in page] == [changed["id"]] + [
        r["id"] for r in reversed(made) if r["name"].startswith("test-0001") and r is not changed
    ]


async def test_an_empty_bucket_lists_nothing(client: TestClient, store: RecordStore) -> None:
    body = await (await client.get("/jobs?name=anything")).json()
    assert body == {"jobs": [], "next": None}


async def test_while_the_index_lags_a_rare_match_is_reached_by_paging_on_past_the_scan_budget(
    client: TestClient, store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lagging(self: jobindex.IndexedBucket, *, within_s: float = 0) -> None:
        return None

    monkeypatch.setattr(jobindex.IndexedBucket, "current", lagging)
    monkeypatch.setattr(listing, "SCAN_BUDGET", 100)
    made = [a_record(i) for i in range(450)]
    made[3]["status"] = "failed"
    await write_all(store, made)
    pages = await page_through(client, "status=failed&limit=10")
    assert [job_id for page in pages for job_id in page] == [made[3]["id"]]
    assert len(pages) == 5 and pages[0] == []  # 100 records read per page at most


async def test_a_forged_cursor_far_past_the_end_costs_one_page(
    client: TestClient, store: RecordStore, reads: ReadCounter
) -> None:
    await write_all(store, [a_record(i) for i in range(5)])
    forged = listing.encode_cursor(2**40)
    response = await asyncio.wait_for(client.get(f"/jobs?limit=3&cursor={forged}"), timeout=10)
    assert response.status == 200
    assert len((await response.json())["jobs"]) == 3 and reads.messages < 50


@pytest.mark.parametrize(("stored", "query"), [("Straße", "STRASSE"), ("ﬁle-sync", "file"), ("\u212aelvin", "kel")])
def test_the_scans_prefilter_keeps_a_name_that_casefolds_into_the_query(stored: str, query: str) -> None:
    # The scan (while the index lags) tested the stored bytes lower-cased, but a name matches case-folded: a job
    # named Straße was missing from ?name=strasse on that path, and found on the index's.
    record = records.new_record(str(uuid.uuid4()))
    record["name"] = stored
    flt = jobindex.Filter(name=query)
    assert listing.matches(record, flt)
    may_match = listing.prefilter(statuses=None, name=query)
    assert may_match is not None and may_match(orjson.dumps(record))
