"""Shared by the listing tests: records written straight into the bucket, and ``GET /jobs`` paged to its end."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from functions.logs import records
from functions.logs.recordstore import RecordStore
from runtime.messaging import encode


async def write_all(store: RecordStore, made: list[records.JobRecord]) -> None:
    """Written in order (each one the newest so far), a few hundred in flight at a time."""
    for start in range(0, len(made), 500):
        chunk = made[start : start + 500]
        await asyncio.gather(*(store.bucket.put(r["id"], encode(r), revision=0) for r in chunk))


async def page_through(client: TestClient, query: str) -> list[list[str]]:
    """Every page's job ids, following ``next`` until it is null."""
    pages: list[list[str]] = []
    url = f"/jobs?{query}"
    while True:
        response = await client.get(url)
        assert response.status == 200, await response.text()
        body = await response.json()
        pages.append([job["id"] for job in body["jobs"]])
        if body["next"] is None:
            return pages
        url = f"/jobs?{query}&cursor={body['next']}"
