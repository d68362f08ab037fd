"""Live followers share one feed per job and process (``functions/logs/livefeed``); a follower that falls behind
or reconnects gets every line once, in order."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from functions.logs import livefeed, logstore
from functions.logs.handlers import create_app
from runtime import messaging
from runtime.jobs import JobStatus
from runtime.settings import Settings
from tests.fakes import submitted
from tests.helpers import poll
from tests.test_logs_api import events_until, messages, next_event


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, conn: messaging.Messaging) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def test_followers_of_one_job_share_one_feed_and_each_gets_every_line(
    client: TestClient, conn: messaging.Messaging
) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    await dispatch.lines(1, ["a", "b"])
    followers = [await client.get(f"/jobs/{dispatch.id}/logs/stream") for _ in range(3)]
    for response in followers:
        seen = []
        while len(messages(seen)) < 2:
            seen.append(await next_event(response))
    feeds = client.app[livefeed.LIVE_FEEDS].feeds
    assert list(feeds) == [dispatch.id] and len(feeds[dispatch.id].channels) == 3

    for n in range(10):
        await dispatch.lines(1, [f"live {n}"])
    await dispatch.finish()
    for response in followers:
        rest = await events_until(response)
        assert messages(rest) == [f"live {n}" for n in range(10)]
        assert [e.id for e in rest if e.event == "message"] == [f"1.{n}" for n in range(3, 13)]
    await poll(lambda: asyncio.sleep(0, result=not feeds))  # the last follower gone, the feed ended


async def test_a_follower_that_falls_behind_reads_on_from_the_stream_without_a_loss_or_a_repeat(
    conn: messaging.Messaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(livefeed, "MAX_QUEUED_BATCHES", 2)
    feeds = livefeed.LiveFeeds(conn)
    dispatch = await submitted(conn)
    await dispatch.running()
    await dispatch.lines(1, ["1"])
    items = logstore.follow(conn, dispatch.id, feeds=feeds)
    lines: list[str] = []
    try:
        while not lines:
            item = await anext(items)
            if isinstance(item, logstore.LiveLine):
                lines.append(item.line["message"])
        [channel] = feeds.feeds[dispatch.id].channels

        # The follower takes nothing while the job prints on: its waiting lists overflow and are dropped.
        for n in range(2, 22):
            await dispatch.lines(1, [str(n)])
        await poll(lambda: asyncio.sleep(0, result=channel.overflows > 0))
        await dispatch.finish(JobStatus.SUCCEEDED)

        async for item in items:
            if isinstance(item, logstore.LiveLine):
                lines.append(item.line["message"])
            elif isinstance(item, logstore.LiveEnd):
                break
    finally:
        await items.aclose()
        await feeds.close()
    assert lines == [str(n) for n in range(1, 22)]


async def test_a_follower_that_reconnects_mid_job_resumes_while_others_keep_following(
    client: TestClient, conn: messaging.Messaging
) -> None:
    dispatch = await submitted(conn)
    await dispatch.running()
    staying = await client.get(f"/jobs/{dispatch.id}/logs/stream")
    leaving = await client.get(f"/jobs/{dispatch.id}/logs/stream")

    async def keep_printing() -> None:
        for n in range(60):
            await dispatch.lines(1, [f"l{n}"])
            await asyncio.sleep(0.01)
        await dispatch.finish()

    printer = asyncio.create_task(keep_printing())
    try:
        got = []
        while len(messages(got)) < 10:
            got.append(await next_event(leaving))
        last_id = [e for e in got if e.event == "message"][-1].id
        leaving.close()  # drops out while the job prints on
        await asyncio.sleep(0.1)
        resumed = await client.get(f"/jobs/{dispatch.id}/logs/stream", headers={"Last-Event-ID": last_id})
        rest = await events_until(resumed, end="end")
        assert messages(got) + messages(rest) == [f"l{n}" for n in range(60)]
        assert messages(await events_until(staying)) == [f"l{n}" for n in range(60)]
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await printer
