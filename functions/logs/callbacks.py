"""Result callbacks: when a job with a ``callback_url`` ends, POST its record and logs there, once.

Exactly one collector replica sends a job's callback: it first claims it on the record by compare-and-set
(``callback.state``: ``pending`` → ``sending``, with its name and the time) and rewrites ``claimed_at`` at least
every ``CLAIM_STEP_S`` plus one request while it holds the claim. A claim left alone for twice that (the lease) is
abandoned (its replica died): every replica looks for such claims, and for due callbacks nobody started, every
quarter lease, and takes them over. A replica that cannot go on (NATS unreachable, shutting down) hands its claim
back (``sending`` → ``pending``) and, unless shutting down, tries again with backoff.

Deliveries run as background tasks, never in the collector's loop, at most ``MAX_CONCURRENT_SENDS`` at a time. The
body is signed (``X-Hades-Signature: sha256=<hex HMAC-SHA256 of the body>``) when ``HADES_CALLBACK_SECRET`` is
set; ``X-Hades-Delivery`` is one id per job, the same on every retry, so a receiver can drop repeats;
``X-Hades-Timestamp`` (unix seconds) says when the attempt was sent. Network errors, 5xx and 429 are retried with
exponential backoff and full jitter (or the ``Retry-After`` seconds, at most ``MAX_RETRY_DELAY_S``), up to
``HADES_CALLBACK_MAX_ATTEMPTS``; every attempt is written to the record. Redirects are not followed (an allowed
host cannot pass the POST on to one that is not), and at most ``ANSWER_MAX_BYTES`` of an answer are read.
Addresses are checked too (``runtime.netguard``): a host that is, or resolves to, a loopback, link-local or
private address outside ``HADES_CALLBACK_ALLOWED_NETWORKS`` is refused, and the connection goes to the address
that was checked. Such a refusal is recorded as "refused by policy", never with the connection error, which would
let a submitter tell open ports from closed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TypedDict, Unpack
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from functions.logs import legacy, logstore, records
from functions.logs.records import CallbackOutcome, CallbackState, JobRecord
from functions.logs.recordstore import RECORDS, RecordStore
from runtime import metrics, netguard, references
from runtime.app import SETTINGS
from runtime.errors import HadesError, Unavailable, truncate
from runtime.jobs import utc_now
from runtime.messaging import MESSAGING, Messaging
from runtime.settings import LogsSettings

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_S = 300.0
"""Longest wait between two attempts, whatever ``Retry-After`` asks for."""
CLAIM_STEP_S = 60.0
"""Longest a sender goes without rewriting its claim, besides one request: reading the job's logs may take this
long at most, and a longer wait between attempts renews the claim this often. Twice that plus twice the request
timeout is the lease (140 s by default)."""
MAX_CONCURRENT_SENDS = 16
"""Callbacks one replica delivers at a time (each holds its body, up to the per-job log cap, and a connection)."""
ANSWER_MAX_BYTES = 4096
"""Of a receiver's answer at most this much is read: its status is what counts, and the rest is not waited for."""
FINISH_TRIES = 5
"""Writes of a callback's outcome before it is given up (and the callback goes stale, to be sent again)."""
HAND_BACK_TIMEOUT_S = 2.0
"""On shutdown, how long handing a claim back may take before it is left to the lease."""
TIMESTAMP_HEADER = "X-Hades-Timestamp"
REFUSED_BY_POLICY = (
    "refused by policy: the host is or resolves to a loopback, link-local or private address "
    "(HADES_CALLBACK_ALLOWED_NETWORKS)"
)
_DELIVERY_NAMESPACE = uuid.UUID("0b7e1f0e-8a55-4c1b-9c61-5b2f0d1f8c3e")


def delivery_id(job_id: str) -> str:
    """One id per job's callback, the same across retries and replicas."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, job_id))


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def host_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """An ``http(s)`` URL whose host is in ``allowed`` (exact, or ``*.example.org`` for its subdomains)."""
    if references.url_problem(url) is not None:
        return False  # not a URL a client can open (submit refuses these; a record from before may hold one)
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    if not allowed:
        return True
    for entry in (a.lower() for a in allowed):
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def retry_after_s(value: str | None) -> float | None:
    """The receiver's ``Retry-After`` in seconds, at most ``MAX_RETRY_DELAY_S``; None to use our own backoff."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    if not math.isfinite(seconds) or seconds < 0:
        return None  # "nan" would never wake up, "inf" never come back, "-5" means nothing
    return min(seconds, MAX_RETRY_DELAY_S)


def backoff_s(settings: LogsSettings, attempt: int) -> float:
    """Full jitter: anywhere between 0 and the exponential ceiling of this attempt."""
    return random.uniform(0, min(settings.callback_backoff_s * 2 ** min(attempt - 1, 32), MAX_RETRY_DELAY_S))


def lease_s(settings: LogsSettings) -> float:
    """How long a claim may stand unrenewed before another replica takes the callback over.

    Twice the longest a live sender goes between two writes of its claim (``CLAIM_STEP_S`` and one request).
    """
    return 2 * (CLAIM_STEP_S + settings.callback_timeout_s)


def resume_every_s(settings: LogsSettings) -> float:
    """How often a replica looks for callbacks that are due but not under way, or whose claim went stale."""
    return lease_s(settings) / 4


class _Progress(TypedDict, total=False):
    """What a sender writes to its claim as it goes (``_note``, ``_finish``)."""

    attempts: int
    last_status: int | None
    last_error: str | None
    claimed_at: str | None


class _Changes(_Progress, total=False):
    state: CallbackState
    outcome: CallbackOutcome
    claimed_by: str | None


def due(record: JobRecord) -> bool:
    """A terminal job whose callback nobody has sent yet."""
    callback = record.get("callback")
    return callback is not None and callback["state"] == "pending" and records.is_terminal(record)


def claim(record: JobRecord | None, *, replica: str, lease: float, now: float) -> JobRecord | None:
    """The record with the callback claimed by ``replica``, or None when it is not ours to send.

    Ours to send: pending, or sending under a claim that went stale, or under ``replica``'s own claim (left over
    when handing it back failed; a replica runs one delivery per job at a time).
    """
    callback = record.get("callback") if record is not None else None
    if record is None or not records.is_terminal(record) or not callback:
        return None
    if callback["state"] == "sending":
        mine = callback.get("claimed_by") == replica
        if not mine and now - _epoch(callback.get("claimed_at")) <= lease:
            return None
    elif callback["state"] != "pending":
        return None
    return {**record, "callback": {**callback, "state": "sending", "claimed_by": replica, "claimed_at": utc_now()}}


def handed_back(record: JobRecord | None, *, replica: str) -> JobRecord | None:
    """The record with ``replica``'s claim given up (``pending`` again), or None when it holds no claim there.

    Only a callback still ``sending`` goes back: a ``done`` one (finished just before a cancel landed) stays done.
    """
    return _noted(record, replica, state="pending", claimed_by=None, claimed_at=None)


def _epoch(text: str | None) -> float:
    try:
        return datetime.fromisoformat(text or "").timestamp()
    except ValueError:
        return 0.0


def _noted(record: JobRecord | None, replica: str, **changes: Unpack[_Changes]) -> JobRecord | None:
    callback = record.get("callback") if record is not None else None
    if record is None or not callback or callback["state"] != "sending" or callback.get("claimed_by") != replica:
        return None  # someone took it over, or it is done: their word counts
    return {**record, "callback": {**callback, **changes}, "updated_at": utc_now()}


def _callback_open(data: bytes) -> bool:
    """A stored record whose callback may still be due (``pending`` also matches a pending step: then it is decoded
    and ``claim`` decides); an ended job whose callback is done or absent is skipped undecoded."""
    return b'"pending"' in data or b'"sending"' in data


class CallbackSender:
    """Claims and delivers callbacks in background tasks; ``close`` cancels them and the periodic look-up."""

    def __init__(
        self, *, session: aiohttp.ClientSession, store: RecordStore, conn: Messaging, settings: LogsSettings
    ) -> None:
        self.session = session
        self.store = store
        self.conn = conn
        self.settings = settings
        self.replica = f"logs-{uuid.uuid4().hex[:12]}"
        self.deliveries: dict[str, asyncio.Task[None]] = {}
        """One task per job being delivered (or waiting to try again) here."""
        self.sending = asyncio.Semaphore(MAX_CONCURRENT_SENDS)
        self.looking: asyncio.Task[None] | None = None
        self.max_log_bytes = settings.job_log_max_bytes
        self.allowed_networks = netguard.networks(settings.callback_allowed_networks)

    def trigger(self, record: JobRecord) -> None:
        """Deliver this job's callback if it is due; returns at once."""
        if due(record):
            self._spawn(record["id"])

    def _spawn(self, job_id: str) -> None:
        if job_id in self.deliveries:
            return  # under way here already
        task = asyncio.create_task(self._deliver(job_id), name=f"callback-{job_id}")
        self.deliveries[job_id] = task
        task.add_done_callback(lambda _: self.deliveries.pop(job_id, None))

    def start(self) -> None:
        """Look for callbacks that are due, or whose sender vanished, now and every quarter lease."""
        self.looking = asyncio.create_task(self._look_periodically(), name="callbacks-resume")

    async def _look_periodically(self) -> None:
        while True:
            try:
                await self.resume()
            except Exception:  # the next look-up may fare better; this loop must not die
                log.exception("looking for pending callbacks failed")
            await asyncio.sleep(resume_every_s(self.settings))

    async def resume(self) -> None:
        """Start every callback that is ours to send (see ``claim``) and not under way here."""
        lease, now = lease_s(self.settings), time.time()
        try:
            async for record in self.store.scan(may_match=_callback_open):
                if record["id"] not in self.deliveries and claim(record, replica=self.replica, lease=lease, now=now):
                    self._spawn(record["id"])
        except HadesError as exc:
            log.warning("could not look for pending callbacks: %s", exc.detail)

    async def close(self) -> None:
        tasks = [*([self.looking] if self.looking else []), *self.deliveries.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver(self, job_id: str) -> None:
        """Claim and send; after a passing error, hand the claim back and try again with backoff."""
        failures = 0
        while True:
            async with self.sending:
                try:
                    record = await self.store.update(job_id, self._claim)
                    if record is None:
                        return  # not due, done, or another replica's
                    await self._send(record)
                    return
                except asyncio.CancelledError:
                    # Shutting down: hand the claim back so another replica sends it without waiting out the lease.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hand_back(job_id), HAND_BACK_TIMEOUT_S)
                    raise
                except HadesError as exc:
                    failures += 1
                    log.warning("job %s: callback not sent now, trying again: %s", job_id, exc.detail)
                    await self._hand_back(job_id)
                except Exception:
                    log.exception("job %s: callback failed unexpectedly; left for the next look-up", job_id)
                    await self._hand_back(job_id)
                    return
            await asyncio.sleep(backoff_s(self.settings, failures))

    def _claim(self, record: JobRecord | None) -> JobRecord | None:
        return claim(record, replica=self.replica, lease=lease_s(self.settings), now=time.time())

    async def _hand_back(self, job_id: str) -> None:
        try:
            await self.store.update(job_id, lambda r: handed_back(r, replica=self.replica))
        except HadesError as exc:
            log.warning("job %s: could not hand the callback back (it goes stale instead): %s", job_id, exc.detail)

    async def _note(self, job_id: str, **changes: Unpack[_Progress]) -> bool:
        """Write ``changes`` to our claim; False when the claim is no longer ours (taken over, or done)."""
        try:
            return await self.store.update(job_id, lambda r: _noted(r, self.replica, **changes)) is not None
        except HadesError as exc:
            log.warning("job %s: could not record the callback's progress: %s", job_id, exc.detail)
            return True  # the claim may still be ours: carry on, the lease allows for a missed write

    async def _finish(self, job_id: str, outcome: CallbackOutcome, **changes: Unpack[_Progress]) -> None:
        """Write the outcome, trying a few times: a claim left ``sending`` would be taken up and sent again."""
        metrics.CALLBACKS.labels(outcome).inc()
        for tries in range(1, FINISH_TRIES + 1):
            try:
                await self.store.update(
                    job_id, lambda r: _noted(r, self.replica, state="done", outcome=outcome, **changes)
                )
                return
            except HadesError as exc:
                log.warning("job %s: could not record the callback's outcome (try %d): %s", job_id, tries, exc.detail)
            if tries < FINISH_TRIES:
                await asyncio.sleep(backoff_s(self.settings, tries))

    async def _wait_holding(self, job_id: str, seconds: float) -> bool:
        """Wait ``seconds``, renewing the claim every ``CLAIM_STEP_S``; False when it was lost meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > CLAIM_STEP_S:
            await asyncio.sleep(CLAIM_STEP_S)
            if not await self._note(job_id, claimed_at=utc_now()):
                return False
        await asyncio.sleep(max(left, 0.0))
        return True

    async def _job_logs(self, record: JobRecord) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(CLAIM_STEP_S):
                return await logstore.job_logs(self.conn, record, max_bytes=self.max_log_bytes)
        except TimeoutError as exc:
            raise Unavailable(f"reading the job's logs took longer than {CLAIM_STEP_S:g} s") from exc

    async def _send(self, record: JobRecord) -> None:
        job_id, url = record["id"], records.callback_url(record) or ""
        if (problem := references.url_problem(url)) is not None:  # it would raise at every look-up: finish it here
            log.warning("job %s: callback to %a not sent: the URL %s", job_id, truncate(url, 200), problem)
            await self._finish(job_id, "refused", last_error=f"callback_url {problem}")
            return
        if not host_allowed(url, self.settings.callback_allowed_hosts):
            log.warning("job %s: callback to %s refused: host not allowed", job_id, truncate(url, 200))
            await self._finish(job_id, "refused", last_error="host not allowed by HADES_CALLBACK_ALLOWED_HOSTS")
            return
        if netguard.host_refusal(urlsplit(url).hostname or "", self.allowed_networks) is not None:
            await self._refuse_by_policy(job_id, url)
            return
        logs = await self._job_logs(record)
        # A /build job gets the original's bare array (what the Artemis adapter binds); /jobs the record too.
        payload = (
            legacy.callback_body(record, logs)
            if legacy.is_build(record)
            else {"job": records.public(record), "logs": logs}
        )
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "hades-logs",
            "X-Hades-Job-Id": job_id,
            "X-Hades-Delivery": delivery_id(job_id),
        }
        if self.settings.callback_secret:
            headers["X-Hades-Signature"] = signature(self.settings.callback_secret, body)
        callback = record["callback"]
        attempts = callback.get("attempts", 0) if callback is not None else 0
        while attempts < self.settings.callback_max_attempts:
            attempts += 1
            began = time.monotonic()
            try:
                status, error, wait = await self._post(url, body, headers)
            except netguard.AddressRefused:
                await self._refuse_by_policy(job_id, url)
                return
            ok = status is not None and 200 <= status < 300
            metrics.CALLBACK_DURATION.labels("ok" if ok else "failed").observe(time.monotonic() - began)
            if ok:
                log.info("job %s: callback delivered (HTTP %d, attempt %d)", job_id, status, attempts)
                await self._finish(job_id, "delivered", attempts=attempts, last_status=status, last_error=None)
                return
            metrics.CALLBACK_FAILURES.inc()
            retryable = status is None or status >= 500 or status == 429
            log.warning("job %s: callback attempt %d failed: %s", job_id, attempts, error or f"HTTP {status}")
            if not retryable or attempts >= self.settings.callback_max_attempts:
                await self._finish(job_id, "failed", attempts=attempts, last_status=status, last_error=error)
                return
            progress = _Progress(attempts=attempts, last_status=status, last_error=error, claimed_at=utc_now())
            delay = wait if wait is not None else backoff_s(self.settings, attempts)
            if not await self._note(job_id, **progress) or not await self._wait_holding(job_id, delay):
                log.info("job %s: callback taken over by another replica", job_id)
                return
        await self._finish(job_id, "failed")

    async def _refuse_by_policy(self, job_id: str, url: str) -> None:
        log.warning("job %s: callback to %s refused: address not allowed", job_id, truncate(url, 200))
        await self._finish(job_id, "refused", last_error=REFUSED_BY_POLICY)

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None, float | None]:
        """One attempt: (HTTP status or None, error text or None, the receiver's Retry-After or None).

        ``netguard.AddressRefused`` when the host resolved to an address the policy refuses.
        """
        try:
            async with self.session.post(
                url,
                data=body,
                headers={**headers, TIMESTAMP_HEADER: str(int(time.time()))},
                allow_redirects=False,  # an allowed host must not pass the POST on to another one
                timeout=aiohttp.ClientTimeout(total=self.settings.callback_timeout_s),
            ) as response:
                # A peek at most: an unread rest closes the connection instead of being downloaded.
                await response.content.read(ANSWER_MAX_BYTES)
                status = response.status
                error = None if status < 300 else f"HTTP {status}"
                if 300 <= status < 400:
                    error = f"HTTP {status} (redirects are not followed)"
                return status, error, retry_after_s(response.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, netguard.AddressRefused):
                raise exc.os_error from None
            return None, truncate(f"{type(exc).__name__}: {exc}", 300), None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, truncate(f"{type(exc).__name__}: {exc}", 300), None


CALLBACKS = web.AppKey("callbacks", CallbackSender)


async def callbacks_context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` entry after the records one: the HTTP session, the sender that uses it, its look-ups."""
    settings = app[SETTINGS].logs
    # The resolver checks every address a host resolves to and hands the connector only those: what is checked
    # is what is connected to.
    resolver = netguard.GuardedResolver(netguard.networks(settings.callback_allowed_networks))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=resolver),
        timeout=aiohttp.ClientTimeout(total=settings.callback_timeout_s),
    ) as session:
        sender = CallbackSender(session=session, store=app[RECORDS], conn=app[MESSAGING], settings=settings)
        app[CALLBACKS] = sender
        sender.start()
        yield
        await sender.close()
    await resolver.close()
