"""One attempt's status events on their way to ``hades.status.<id>``: in order, kept through a NATS outage.

A status event that cannot be stored (NATS unreachable) is kept and sent again, the same event with the same
``Nats-Msg-Id``, before any later one: each publish first retries the kept ones in order, one try while NATS is
away (a step never waits longer than one publish did), and the terminal event is published only once every
earlier one is stored, so it stays the attempt's last. At most ``MAX_UNSENT_STATUS_EVENTS`` are kept; past that
the oldest step event is dropped, counted (``lost_status_events``) and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from runtime import eventlog, events, messaging
from runtime.errors import HadesError, Unavailable

log = logging.getLogger(__name__)

TERMINAL_PUBLISH_ATTEMPTS = 4
"""Tries (0.5, 1, 2 s apart) to store a terminal event before the job is handed back instead of acked."""
MAX_UNSENT_STATUS_EVENTS = 1000
"""Status events of one attempt kept while NATS is unreachable; past it the oldest step event is dropped."""


async def _owned() -> bool:
    return True


class StatusQueue:
    def __init__(
        self, conn: messaging.Messaging, *, job_id: str, guard: Callable[[], Awaitable[bool]] = _owned
    ) -> None:
        self.conn = conn
        self.job_id = job_id
        self.guard = guard
        """Asked before each event leaves: whether this attempt still owns the job (dispatch's lease)."""
        self.unsent: deque[events.StatusEvent] = deque()
        """Status events not stored yet, in seq order: the first is the one being (or next to be) sent."""
        self.lost_status_events = 0
        """Status events never stored: dropped past ``MAX_UNSENT_STATUS_EVENTS``, or refused for good."""
        self._sending = asyncio.Lock()  # one sender at a time: events leave in order
        self._outage_since: float | None = None

    async def publish(self, event: events.StatusEvent) -> None:
        """Store a non-terminal status event after every earlier one; while NATS is away it is kept for the next
        publish (or ``flush``) to send, at the cost of one failed try."""
        self.unsent.append(event)
        async with self._sending:
            await self._send_unsent(retries=False)
            self._bound()

    async def _stand_down(self) -> bool:
        """True (and nothing kept) when another attempt owns the job: its events are not ours to add to."""
        if await self.guard():
            return False
        self.unsent.clear()
        return True

    async def publish_last(self, event: events.StatusEvent) -> None:
        """Store every kept event, then ``event`` (the terminal one), each with retries; ``Unavailable`` if NATS
        stays away (the kept events stay kept, ``event`` is not stored)."""
        async with self._sending:
            await self._send_unsent(retries=True)
            if not await self._stand_down():
                await publish_with_retries(self.conn, event)

    def _bound(self) -> None:
        """Past ``MAX_UNSENT_STATUS_EVENTS`` kept (NATS away that long), drop the oldest step event (a job event, say
        the ``running`` one with the dispatcher's identity, only if nothing else is left)."""
        while len(self.unsent) > MAX_UNSENT_STATUS_EVENTS:
            index = next((i for i, e in enumerate(self.unsent) if e["kind"] == "step"), 0)
            dropped = self.unsent[index]
            del self.unsent[index]
            self.lost_status_events += 1
            if self.lost_status_events == 1 or self.lost_status_events % 100 == 0:
                log.warning(
                    "job %s: %d status events lost so far (the latest %s of seq %d): NATS unreachable, %d kept",
                    self.job_id,
                    self.lost_status_events,
                    dropped["status"],
                    dropped["seq"],
                    len(self.unsent),
                )

    async def _send_unsent(self, *, retries: bool) -> None:
        while self.unsent:
            if await self._stand_down():
                return
            event = self.unsent[0]
            try:
                if retries:
                    await publish_with_retries(self.conn, event)
                else:
                    await eventlog.publish_status(self.conn, event)
            except Unavailable as exc:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning(
                        "job %s: status event %s (seq %d) not stored yet, kept to send again: %s",
                        self.job_id,
                        event["status"],
                        event["seq"],
                        exc.detail,
                    )
                if retries:
                    raise
                return
            except HadesError as exc:  # permanent (too large for the broker): sending it again cannot help
                self.lost_status_events += 1
                log.warning("job %s: status event %s lost: %s", self.job_id, event["status"], exc.detail)
            else:
                if self._outage_since is not None:
                    log.info(
                        "job %s: status events stored again after %.1f s",
                        self.job_id,
                        time.monotonic() - self._outage_since,
                    )
                    self._outage_since = None
            self.unsent.popleft()


async def publish_with_retries(conn: messaging.Messaging, event: events.StatusEvent) -> None:
    """The same ``Nats-Msg-Id`` each time, so a retry after a lost ack stores the event once."""
    delay_s = 0.5
    for attempt in range(1, TERMINAL_PUBLISH_ATTEMPTS + 1):
        try:
            await eventlog.publish_status(conn, event)
            return
        except Unavailable:
            if attempt == TERMINAL_PUBLISH_ATTEMPTS:
                raise
            await asyncio.sleep(delay_s)
            delay_s *= 2
