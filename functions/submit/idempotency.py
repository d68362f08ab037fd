"""``Idempotency-Key``: which job id a key names, and refusing a key reused with a different body.

The first POST with a key creates (atomically: KV ``create``) an entry in ``HADES_IDEMPOTENCY`` holding a digest
of the canonical body and a fresh random job id; the entry expires with the jobs stream's duplicate window.
Within the window the same key with the same body names that id again (the store de-duplicates it by
``Nats-Msg-Id``: a replay), with another body it is a 409. After the window the key is free again and names a
*new* random id: a job id is never derived from the key, so two runs never share one id.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from runtime import jobs
from runtime.errors import Conflict
from runtime.jobs import JobId
from runtime.messaging import MESSAGING, Bucket, RevisionConflict, encode, topology
from runtime.settings import Settings

IDEMPOTENCY = web.AppKey("idempotency", Bucket)
_CLAIM_ATTEMPTS = 3


class IdempotencyConflict(Conflict):
    title = "Idempotency-Key reused with a different body"
    kind = "idempotency-conflict"


def body_digest(document: Any) -> str:
    """SHA-256 of the document with sorted keys: the same JSON sent with other spacing or key order matches."""
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _entry_key(key: str) -> str:
    # A key is any printable ASCII; KV keys allow fewer characters, so the entry is named by the key's hash.
    return hashlib.sha256(key.encode()).hexdigest()


async def job_id_for(bucket: Bucket, key: str, document: Any) -> JobId:
    """The job id ``key`` names for ``document``; ``IdempotencyConflict`` when it was used with another body."""
    digest = body_digest(document)
    entry_key = _entry_key(key)
    fresh = jobs.new_job_id()
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            await bucket.put(entry_key, encode({"digest": digest, "job_id": fresh}), revision=0)
            return fresh
        except RevisionConflict:
            entry = await bucket.get(entry_key)
        if entry is None:  # expired between our create and our read: claim it again
            continue
        stored = orjson.loads(entry.value)
        if stored["digest"] != digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body within the duplicate window"
                f" (job {stored['job_id']}); use a new key for a new job"
            )
        return JobId(str(stored["job_id"]))
    raise IdempotencyConflict("this Idempotency-Key is being claimed by concurrent requests; retry")


async def release(bucket: Bucket, key: str, job_id: JobId) -> None:
    """Free ``key`` after a request it named ``job_id`` for was refused unstored (e.g. 413 from the broker), so a
    retry with a valid body is not a 409 naming a job that never existed. Only while it still names ``job_id``."""
    entry_key = _entry_key(key)
    entry = await bucket.get(entry_key)
    if entry is not None and orjson.loads(entry.value).get("job_id") == job_id:
        with contextlib.suppress(RevisionConflict):  # written since: by a request whose word counts now
            await bucket.delete(entry_key, revision=entry.revision)


def idempotency_context(settings: Settings) -> Any:
    """A ``cleanup_ctx`` entry after the messaging one: open the bucket before the app serves."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[IDEMPOTENCY] = await app[MESSAGING].bucket(topology.idempotency_bucket_config(settings))
        yield

    return context
