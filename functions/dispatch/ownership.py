"""Who owns a running job: one lease per job in the KV bucket ``HADES_LEASES``, taken by each attempt.

JetStream hands a job to another dispatcher when the first stays silent past ``AckWait`` — dead, or only paused
(SIGSTOP, a long GC, a frozen VM). A paused one that resumes would still act on the job: publish its events, stop
or remove its containers, ack its message. The lease makes ownership explicit: each attempt claims the job's key
by compare-and-set with its attempt number (a later attempt wins, an earlier one never overwrites it), and checks
it before every side effect (a status event, a log batch, an in-progress ack, a container action, the final
answer). One that finds a later attempt there stands down without touching the job, its containers or its events.

The lease also holds what a restarted dispatcher on the same host needs to hand a dead one's delivery back at
once (its host, pid and the delivery's opaque token): kept here, not in the public ``running`` event.

API: ``Leases.claim(job_id, attempt=…, holder=…)`` → ``Lease`` (or None: a later attempt already owns the job);
``Lease.held()`` → whether this attempt still owns it; ``Leases.holder(job_id)`` → the current ``Holder``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field

from runtime.errors import Unavailable
from runtime.messaging import Bucket, RevisionConflict

log = logging.getLogger(__name__)

FRESH_S = 0.5
"""A check this recent (monotonic time, which runs on through a pause) is trusted; a takeover needs AckWait."""
CLAIM_TRIES = 5


@dataclass(frozen=True)
class Holder:
    """The attempt that owns a job, and where it runs."""

    attempt: int
    dispatcher: str
    host: str = ""
    pid: int = 0
    delivery: str = ""
    """The delivery's opaque token (``Delivery.token``): ``Messaging.nak_delivery`` hands it back."""

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Holder | None:
        try:
            fields = json.loads(data)
            return cls(
                attempt=int(fields["attempt"]),
                dispatcher=str(fields["dispatcher"]),
                host=str(fields.get("host", "")),
                pid=int(fields.get("pid", 0)),
                delivery=str(fields.get("delivery", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class Lease:
    """One attempt's hold on its job. Without a bucket (tests, or the broker down at claim time) it is held."""

    job_id: str
    holder: Holder
    bucket: Bucket | None = None
    lost: bool = False
    _checked_at: float = field(default=-math.inf)

    async def held(self) -> bool:
        """Whether no later attempt took the job over. Once lost, lost for good. While the broker does not answer
        the lease counts as held: nothing this attempt sends could be stored then anyway."""
        if self.lost:
            return False
        if self.bucket is None or time.monotonic() - self._checked_at < FRESH_S:
            return True
        try:
            entry = await self.bucket.get(self.job_id)
        except Unavailable:
            return True
        current = Holder.decode(entry.value) if entry is not None else None
        if current is not None and (current.attempt, current.dispatcher) != (
            self.holder.attempt,
            self.holder.dispatcher,
        ):
            log.warning(
                "job %s: attempt %d was taken over by attempt %d (dispatcher %s); standing down",
                self.job_id,
                self.holder.attempt,
                current.attempt,
                current.dispatcher,
            )
            self.lost = True
            return False
        self._checked_at = time.monotonic()
        return True


class Leases:
    def __init__(self, bucket: Bucket | None) -> None:
        self.bucket = bucket

    async def claim(self, job_id: str, *, holder: Holder) -> Lease | None:
        """Take the job for ``holder``'s attempt; None when a later attempt owns it already."""
        if self.bucket is None:
            return Lease(job_id, holder)
        try:
            for _ in range(CLAIM_TRIES):
                entry = await self.bucket.get(job_id)
                current = Holder.decode(entry.value) if entry is not None else None
                if current is not None and current.attempt > holder.attempt:
                    return None
                try:
                    await self.bucket.put(job_id, holder.encode(), revision=entry.revision if entry else 0)
                except RevisionConflict:
                    continue  # another attempt claimed it meanwhile: look again
                return Lease(job_id, holder, self.bucket, _checked_at=time.monotonic())
        except Unavailable as exc:
            log.warning("job %s: its lease could not be claimed (%s); running without one", job_id, exc.detail)
            return Lease(job_id, holder)
        log.warning("job %s: its lease kept changing; running without one", job_id)
        return Lease(job_id, holder)

    async def holder(self, job_id: str) -> Holder | None:
        if self.bucket is None:
            return None
        entry = await self.bucket.get(job_id)
        return Holder.decode(entry.value) if entry is not None else None
