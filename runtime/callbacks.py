"""Result callbacks: when a job with a ``callback_url`` ends, POST its record and logs there, once.

Exactly one collector replica sends a job's callback: it first claims it on the record by compare-and-set
(``callback.state``: ``pending`` → ``sending``, with its name and the time); a claim older than the longest a
delivery can take is considered abandoned (its replica died) and may be taken over. Deliveries run as background
tasks, never in the collector's loop. The body is signed (``X-Hades-Signature: sha256=<hex HMAC-SHA256>``) when
``HADES_CALLBACK_SECRET`` is set; ``X-Hades-Delivery`` is one id per job, the same on every retry, so a receiver
can drop repeats. Network errors, 5xx and 429 are retried with exponential backoff and full jitter (or the
``Retry-After`` seconds), up to ``HADES_CALLBACK_MAX_ATTEMPTS``; every attempt is written to the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from runtime import logstore, metrics, records
from runtime.errors import HadesError, truncate
from runtime.jobs import utc_now
from runtime.messaging import MESSAGING, Messaging
from runtime.records import Record
from runtime.recordstore import RECORDS, RecordStore
from runtime.settings import LogsSettings
from runtime.web import SETTINGS

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_S = 300.0
"""Longest wait between two attempts, whatever ``Retry-After`` asks for."""
_DELIVERY_NAMESPACE = uuid.UUID("0b7e1f0e-8a55-4c1b-9c61-5b2f0d1f8c3e")


def delivery_id(job_id: str) -> str:
    """One id per job's callback, the same across retries and replicas."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, job_id))


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def host_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """An ``http(s)`` URL whose host is in ``allowed`` (exact, or ``*.example.org`` for its subdomains)."""
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
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return min(max(seconds, 0.0), MAX_RETRY_DELAY_S)


def backoff_s(settings: LogsSettings, attempt: int) -> float:
    """Full jitter: anywhere between 0 and the exponential ceiling of this attempt."""
    return random.uniform(0, min(settings.callback_backoff_s * 2 ** (attempt - 1), MAX_RETRY_DELAY_S))


def lease_s(settings: LogsSettings) -> float:
    """How long a claim may stand before another replica takes the callback over."""
    return settings.callback_max_attempts * (settings.callback_timeout_s + MAX_RETRY_DELAY_S) + 60.0


def due(record: Record) -> bool:
    """A terminal job whose callback nobody has sent yet."""
    callback = record.get("callback")
    return callback is not None and callback["state"] == "pending" and records.is_terminal(record)


def claim(record: Record | None, *, replica: str, lease: float, now: float) -> Record | None:
    """The record with the callback claimed by ``replica``, or None when it is not ours to send."""
    if record is None or not records.is_terminal(record) or not record.get("callback"):
        return None
    callback = record["callback"]
    stale = callback["state"] == "sending" and now - _epoch(callback.get("claimed_at")) > lease
    if callback["state"] != "pending" and not stale:
        return None
    record = {**record, "callback": {**callback, "state": "sending", "claimed_by": replica, "claimed_at": utc_now()}}
    return record


def _epoch(text: str | None) -> float:
    try:
        return datetime.fromisoformat(text or "").timestamp()
    except ValueError:
        return 0.0


def _noted(record: Record | None, replica: str, **changes: Any) -> Record | None:
    if record is None or not record.get("callback") or record["callback"].get("claimed_by") != replica:
        return None  # someone took it over: their word counts
    return {**record, "callback": {**record["callback"], **changes}, "updated_at": utc_now()}


class CallbackSender:
    """Claims and delivers callbacks in background tasks; ``close`` cancels the ones still running."""

    def __init__(
        self, *, session: aiohttp.ClientSession, store: RecordStore, conn: Messaging, settings: LogsSettings
    ) -> None:
        self.session = session
        self.store = store
        self.conn = conn
        self.settings = settings
        self.replica = f"logs-{uuid.uuid4().hex[:12]}"
        self.tasks: set[asyncio.Task[None]] = set()
        self.max_log_bytes = settings.job_log_max_bytes

    def trigger(self, record: Record) -> None:
        """Deliver this job's callback if it is due; returns at once."""
        if due(record):
            self._spawn(record["id"])

    def _spawn(self, job_id: str) -> None:
        task = asyncio.create_task(self._deliver(job_id), name=f"callback-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def start(self) -> None:
        """Look for callbacks that were due, or whose sender vanished, in the background."""
        task = asyncio.create_task(self.resume(), name="callbacks-resume")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def resume(self) -> None:
        lease, now = lease_s(self.settings), time.time()
        try:
            async for record in self.store.scan():
                if claim(record, replica=self.replica, lease=lease, now=now) is not None:
                    self._spawn(record["id"])
        except HadesError as exc:
            log.warning("could not look for pending callbacks: %s", exc.detail)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver(self, job_id: str) -> None:
        try:
            lease = lease_s(self.settings)
            record = await self.store.update(
                job_id, lambda r: claim(r, replica=self.replica, lease=lease, now=time.time())
            )
            if record is None:
                return  # another replica has it, or it is done
            await self._send(record)
        except asyncio.CancelledError:
            # Shutting down: hand the claim back so the next replica to start sends it without waiting a lease.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._note(job_id, state="pending", claimed_by=None, claimed_at=None), 2.0)
            raise
        except HadesError as exc:
            log.warning("job %s: callback not sent now: %s", job_id, exc.detail)
        except Exception:
            log.exception("job %s: callback failed unexpectedly", job_id)

    async def _note(self, job_id: str, **changes: Any) -> None:
        try:
            await self.store.update(job_id, lambda r: _noted(r, self.replica, **changes))
        except HadesError as exc:
            log.warning("job %s: could not record the callback outcome: %s", job_id, exc.detail)

    async def _finish(self, job_id: str, outcome: str, **changes: Any) -> None:
        metrics.CALLBACKS.labels(outcome).inc()
        await self._note(job_id, state="done", outcome=outcome, **changes)

    async def _send(self, record: Record) -> None:
        job_id, url = record["id"], records.callback_url(record) or ""
        if not host_allowed(url, self.settings.callback_allowed_hosts):
            log.warning("job %s: callback to %s refused: host not allowed", job_id, truncate(url, 200))
            await self._finish(job_id, "refused", last_error="host not allowed by HADES_CALLBACK_ALLOWED_HOSTS")
            return
        logs = await logstore.job_logs(self.conn.nc, record, max_bytes=self.max_log_bytes)
        body = json.dumps({"job": records.public(record), "logs": logs}, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "hades-logs",
            "X-Hades-Job-Id": job_id,
            "X-Hades-Delivery": delivery_id(job_id),
        }
        if self.settings.callback_secret:
            headers["X-Hades-Signature"] = signature(self.settings.callback_secret, body)
        attempts = record["callback"].get("attempts", 0)
        while attempts < self.settings.callback_max_attempts:
            attempts += 1
            status, error, wait = await self._post(url, body, headers)
            if status is not None and 200 <= status < 300:
                log.info("job %s: callback delivered (HTTP %d, attempt %d)", job_id, status, attempts)
                await self._finish(job_id, "delivered", attempts=attempts, last_status=status, last_error=None)
                return
            metrics.CALLBACK_FAILURES.inc()
            retryable = status is None or status >= 500 or status == 429
            log.warning("job %s: callback attempt %d failed: %s", job_id, attempts, error or f"HTTP {status}")
            if not retryable or attempts >= self.settings.callback_max_attempts:
                await self._finish(job_id, "failed", attempts=attempts, last_status=status, last_error=error)
                return
            await self._note(job_id, attempts=attempts, last_status=status, last_error=error)
            await asyncio.sleep(wait if wait is not None else backoff_s(self.settings, attempts))
        await self._finish(job_id, "failed")

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None, float | None]:
        """One attempt: (HTTP status or None, error text or None, the receiver's Retry-After or None)."""
        try:
            async with self.session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.settings.callback_timeout_s),
            ) as response:
                await response.read()
                error = None if response.status < 300 else f"HTTP {response.status}"
                return response.status, error, retry_after_s(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, truncate(f"{type(exc).__name__}: {exc}", 300), None


CALLBACKS = web.AppKey("callbacks", CallbackSender)


async def callbacks_context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` entry after the records one: the HTTP client session and the sender that uses it."""
    settings = app[SETTINGS].logs
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.callback_timeout_s)) as session:
        sender = CallbackSender(session=session, store=app[RECORDS], conn=app[MESSAGING], settings=settings)
        app[CALLBACKS] = sender
        sender.start()
        yield
        await sender.close()
