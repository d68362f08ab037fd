"""One live feed per job and process: the job's new events read once and handed to every follower of it.

A thousand followers of two hundred jobs would otherwise hold a thousand NATS subscriptions and read the stream
a thousand times per batch. A ``JobFeed`` holds the job's one plain subscription (``hades.*.<id>``, a wake-up) and
reads the job's new messages from ``HADES_EVENTS`` once per wake-up (or every ``POLL_S``, should a wake-up be
lost), then offers the same list to each follower's ``Channel``. The feed starts with the first follower and ends
with the last.

A channel reads the stream itself until it has caught up (the history, a ``Last-Event-ID`` resume), then takes the
feed's lists, skipping what it has already read: the feed covers every message stored after it started, so
nothing falls between the two. A follower too slow to take its lists (``MAX_QUEUED_BATCHES`` waiting) has them
dropped and reads the stream again from where it stopped: it falls behind, never loses or repeats a message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from aiohttp import web

from runtime import subjects, tasks
from runtime.errors import HadesError
from runtime.messaging import MESSAGING, Messaging, StoredMessage, Subscription

log = logging.getLogger(__name__)

POLL_S = 0.5
"""A feed re-reads this often even without a wake-up, so a lost one delays its followers by at most this."""
MAX_QUEUED_BATCHES = 256
"""Lists a channel holds for a slow follower; past it they are dropped and the follower reads the stream."""
RETRY_S = 1.0
"""Pause of a feed after NATS trouble."""


class Channel:
    """One follower's end of a feed: ``messages`` from a stream position on, ``wait`` for more."""

    def __init__(self, conn: Messaging, job_id: str) -> None:
        self._conn = conn
        self._subject = subjects.job_events_subject(job_id)
        self._batches: collections.deque[list[StoredMessage]] = collections.deque()
        self._ready = asyncio.Event()
        self._read_stream = True  # until caught up, and again after an overflow
        self.overflows = 0

    def offer(self, batch: list[StoredMessage]) -> None:
        """A feed's new messages (in stream order)."""
        if self._read_stream:
            return  # the channel reads the stream itself until it is there
        if len(self._batches) >= MAX_QUEUED_BATCHES:
            self._batches.clear()
            self._read_stream = True
            self.overflows += 1
        else:
            self._batches.append(batch)
        self._ready.set()

    async def messages(self, start_seq: int) -> AsyncGenerator[StoredMessage, None]:
        """Every message of the job from ``start_seq`` on that has arrived so far, in stream order, each once."""
        seq = start_seq
        if self._read_stream:
            self._read_stream = False  # from here on the feed's lists are kept; repeats are skipped below
            self._batches.clear()
            stored = self._conn.read(stream=subjects.EVENTS_STREAM, subject=self._subject, start_seq=seq)
            async with contextlib.aclosing(stored):
                async for message in stored:
                    seq = message.seq + 1
                    yield message
        while self._batches and not self._read_stream:
            for message in self._batches.popleft():
                if message.seq >= seq:
                    seq = message.seq + 1
                    yield message

    async def wait(self, timeout_s: float | None) -> bool:
        """Until there may be more (True), or ``timeout_s`` passed (False; None: no limit)."""
        if self._batches or self._read_stream:
            return True
        self._ready.clear()
        if timeout_s is None:
            await self._ready.wait()
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class JobFeed:
    """The job's subscription and reader, shared by its channels."""

    def __init__(self, conn: Messaging, job_id: str) -> None:
        self.conn = conn
        self.job_id = job_id
        self.subject = subjects.job_events_subject(job_id)
        self.channels: set[Channel] = set()
        self._wake = asyncio.Event()
        self._cursor = 1
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        """Subscribe, then note where the stream ends: every message stored after that is read by the feed."""
        try:

            async def on_message(subject: str, data: bytes) -> None:
                self._wake.set()

            self._sub = await self.conn.subscribe(self.subject, on_message, pending_limit=1024)
            last = await self.conn.last_message(subjects.EVENTS_STREAM, self.subject)
            self._cursor = last.seq + 1 if last is not None else 1
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self.started.cancel()
            else:
                self.started.set_exception(exc)
                self.started.exception()  # retrieved: the first follower raises it, later ones may never ask
            await self.close()
            raise
        self._task = asyncio.create_task(self._run(), name=f"live-feed-{self.job_id}")
        self.started.set_result(None)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                batch = await self._read_new()
            except HadesError as exc:
                log.warning("job %s: live feed paused: %s", self.job_id, exc.detail)
                await asyncio.sleep(RETRY_S)
                continue
            if batch:
                self._cursor = batch[-1].seq + 1
                for channel in list(self.channels):
                    channel.offer(batch)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)

    async def _read_new(self) -> list[StoredMessage]:
        stored = self.conn.read(stream=subjects.EVENTS_STREAM, subject=self.subject, start_seq=self._cursor)
        async with contextlib.aclosing(stored):
            return [message async for message in stored]

    async def close(self) -> None:
        if self._task is not None:
            await tasks.cancel_and_wait(self._task)  # a read's wait_for may swallow one cancel
        if self._sub is not None:
            await self._sub.close()


class LiveFeeds:
    """This process's feeds, one per followed job."""

    def __init__(self, conn: Messaging) -> None:
        self.conn = conn
        self.feeds: dict[str, JobFeed] = {}

    @contextlib.asynccontextmanager
    async def join(self, job_id: str) -> AsyncIterator[Channel]:
        """A channel of the job's feed (started by its first follower, ended with its last)."""
        feed = self.feeds.get(job_id)
        if feed is None:
            feed = self.feeds[job_id] = JobFeed(self.conn, job_id)
            starting = asyncio.create_task(feed.start())
        else:
            starting = None
        channel = Channel(self.conn, job_id)
        feed.channels.add(channel)
        try:
            if starting is not None:
                await starting
            else:
                await asyncio.shield(feed.started)
            yield channel
        finally:
            feed.channels.discard(channel)
            if not feed.channels and self.feeds.get(job_id) is feed:
                del self.feeds[job_id]
                await feed.close()

    async def close(self) -> None:
        for feed in list(self.feeds.values()):
            await feed.close()
        self.feeds.clear()


LIVE_FEEDS = web.AppKey("live_feeds", LiveFeeds)


async def live_feeds_context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` entry after the messaging one: the process's feeds, ended before NATS is drained."""
    feeds = LiveFeeds(app[MESSAGING])
    app[LIVE_FEEDS] = feeds
    yield
    await feeds.close()
