"""The results bucket: a JetStream Object Store behind the messaging door, streamed both ways, byte-exact."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime import messaging, subjects
from runtime.messaging import topology
from runtime.messaging.objects import CHUNK_BYTES
from runtime.settings import Settings
from tests.helpers import make_settings


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(conn: messaging.Messaging, objects: messaging.Objects, name: str) -> bytes:
    found = await objects.located(name)
    assert found is not None
    return b"".join([chunk async for chunk in conn.object_chunks(objects, found[1])])


async def test_a_file_is_stored_in_bounded_chunks_and_read_back_byte_exact(
    conn: messaging.Messaging, settings: Settings, js: Any
) -> None:
    objects = await conn.objects(topology.results_bucket_config(settings))
    data = os.urandom(3 * CHUNK_BYTES + 12345)
    stored = await objects.put("job-1/app.jar", pieces(data, 70_000), max_bytes=10 * CHUNK_BYTES)
    assert (stored.size, stored.chunks, stored.sha256) == (len(data), 4, hashlib.sha256(data).hexdigest())
    assert await read_all(conn, objects, "job-1/app.jar") == data
    ranged = messaging.read_range(
        conn.object_chunks(objects, (await objects.located("job-1/app.jar") or ("", ""))[1]), start=200_000, length=9
    )
    assert b"".join([c async for c in ranged]) == data[200_000:200_009]
    # nats-py (and so the nats CLI) reads it as an ordinary Object Store object
    result = await (await js.object_store(subjects.RESULTS_BUCKET)).get("job-1/app.jar")
    assert result.data == data


async def test_an_empty_file_and_a_missing_one(conn: messaging.Messaging, settings: Settings) -> None:
    objects = await conn.objects(topology.results_bucket_config(settings))
    stored = await objects.put("job-1/empty.txt", pieces(b"", 1), max_bytes=10)
    assert (stored.size, stored.chunks) == (0, 0)
    assert await read_all(conn, objects, "job-1/empty.txt") == b""
    assert await objects.info("job-1/none") is None


async def test_a_file_past_its_limit_leaves_nothing_behind(
    conn: messaging.Messaging, settings: Settings, js: Any
) -> None:
    objects = await conn.objects(topology.results_bucket_config(settings))
    with pytest.raises(messaging.ObjectTooLarge):
        await objects.put("job-1/big", pieces(b"x" * (3 * CHUNK_BYTES), CHUNK_BYTES), max_bytes=2 * CHUNK_BYTES)
    assert await objects.info("job-1/big") is None
    info = await js.stream_info(objects.stream)
    assert info.state.messages == 0


async def test_the_bucket_takes_replicas_and_age_from_the_event_settings(clean_nats: str, js: Any) -> None:
    settings = make_settings(clean_nats, HADES_EVENTS_MAX_AGE_SECONDS="3600")
    conn = await messaging.connect(settings, name="test-results")
    try:
        await conn.objects(topology.results_bucket_config(settings))
        info = await js.stream_info(f"OBJ_{subjects.RESULTS_BUCKET}")
        assert info.config.max_age == 3600 and info.config.num_replicas == 1
        longer = make_settings(clean_nats, HADES_EVENTS_MAX_AGE_SECONDS="7200")
        await conn.objects(topology.results_bucket_config(longer))  # a second replica, another age: adopted
        assert (await js.stream_info(f"OBJ_{subjects.RESULTS_BUCKET}")).config.max_age == 7200
    finally:
        await conn.close()


async def test_a_file_stored_again_replaces_its_bytes_instead_of_adding_to_them(
    conn: messaging.Messaging, settings: Settings, js: Any
) -> None:
    """Review: every redelivery that collects a job's results again puts the same names again; the
    earlier put's chunks stayed stored (only the description is rolled up) until the bucket's age limit."""
    objects = await conn.objects(topology.results_bucket_config(settings))
    stream = f"OBJ_{subjects.RESULTS_BUCKET}"
    await objects.put("job-2/app.jar", pieces(os.urandom(3 * CHUNK_BYTES), CHUNK_BYTES), max_bytes=10 * CHUNK_BYTES)
    once = (await js.stream_info(stream)).state.messages
    data = os.urandom(3 * CHUNK_BYTES)
    await objects.put("job-2/app.jar", pieces(data, CHUNK_BYTES), max_bytes=10 * CHUNK_BYTES)
    assert (await js.stream_info(stream)).state.messages == once
    assert await read_all(conn, objects, "job-2/app.jar") == data
