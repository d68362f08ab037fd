"""A JetStream Object Store bucket through the door: streamed puts and reads, one object per file.

nats-py's ``ObjectStore.put`` reads from a blocking file object and its ``get`` gathers the whole object in
memory; a job's files come from an asynchronous stream and go out to an HTTP response, so both directions are
done here in the Object Store's own layout (chunks on ``$O.<bucket>.C.<nuid>``, the object's description on
``$O.<bucket>.M.<name>``, rolled up), which nats-py and the ``nats`` CLI read alike. At most one chunk (``put``)
or one read batch (``read``) is held at a time; nothing touches a local disk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError

from runtime.errors import Unavailable
from runtime.messaging.errors import translated

CHUNK_BYTES = 128 * 1024
"""Object Store chunk size (nats-py's default): a chunk is one JetStream message, far below the payload limit."""
CHUNKS_IN_FLIGHT = 8
"""Chunks published before the oldest one's ack is awaited: 1 MiB in flight per object, instead of one round
trip per chunk (which held a collection to a fifth of what the volume gives)."""


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int
    sha256: str
    """Hex digest of the content."""
    chunks: int
    headers: dict[str, str]


class ObjectTooLarge(Exception):
    """A ``put`` stream went past its ``max_bytes``: nothing of it is kept."""


class Objects:
    """One Object Store bucket."""

    def __init__(self, nc: Client, js: JetStreamContext, *, bucket: str, timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._js = js
        self._timeout_s = timeout_s
        self.bucket = bucket
        self.stream = f"OBJ_{bucket}"

    def _meta_subject(self, name: str) -> str:
        return f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"

    async def put(
        self,
        name: str,
        content: AsyncIterable[bytes],
        *,
        max_bytes: int,
        headers: dict[str, str] | None = None,
    ) -> StoredObject:
        """Store ``content`` as ``name`` in ``CHUNK_BYTES`` chunks; ``ObjectTooLarge`` past ``max_bytes`` (its chunks
        are purged); ``Unavailable`` when NATS fails (likewise)."""
        nuid = self._nc._nuid.next().decode()
        chunk_subject = f"$O.{self.bucket}.C.{nuid}"
        digest = hashlib.sha256()
        size = chunks = 0
        pending = bytearray()
        inflight: deque[asyncio.Future[Any]] = deque()
        try:
            with translated(f"storing {name}"):
                async for piece in content:
                    size += len(piece)
                    if size > max_bytes:
                        raise ObjectTooLarge(name)
                    digest.update(piece)
                    pending += piece
                    while len(pending) >= CHUNK_BYTES:
                        await self._send(inflight, chunk_subject, bytes(pending[:CHUNK_BYTES]))
                        del pending[:CHUNK_BYTES]
                        chunks += 1
                if pending:
                    await self._send(inflight, chunk_subject, bytes(pending))
                    chunks += 1
                while inflight:
                    await self._acked(inflight.popleft())
                replaced = await self._previous_nuid(name)
                info = js_api.ObjectInfo(
                    name=name,
                    bucket=self.bucket,
                    nuid=nuid,
                    size=size,
                    chunks=chunks,
                    mtime=datetime.now(UTC).isoformat(),
                    digest="SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode(),
                    headers=headers or None,
                    options=js_api.ObjectMetaOptions(max_chunk_size=CHUNK_BYTES),
                )
                await self._js.publish(
                    self._meta_subject(name),
                    json.dumps(info.as_dict()).encode(),
                    headers={"Nats-Rollup": "sub"},
                )
        except BaseException:
            # The chunks in flight may still be stored: wait for them (briefly), so the purge removes them too.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout_s):
                    await asyncio.gather(*inflight, return_exceptions=True)
            await self._purge(chunk_subject)
            raise
        if replaced is not None and replaced != nuid:  # stored again (a redelivery collects again): one copy
            await self._purge(self.chunk_subject(replaced))
        return StoredObject(name=name, size=size, sha256=digest.hexdigest(), chunks=chunks, headers=headers or {})

    async def _previous_nuid(self, name: str) -> str | None:
        """The chunks' nuid of an object of this name stored before, if any (its chunks go once it is replaced)."""
        try:
            found = await self._info(name)
        except Unavailable:
            return None  # the bucket's age limit removes them then
        return None if found is None else found[1]

    async def _send(self, inflight: deque[asyncio.Future[Any]], subject: str, chunk: bytes) -> None:
        """Publish a chunk with at most ``CHUNKS_IN_FLIGHT`` unacknowledged (in order: one connection)."""
        if len(inflight) >= CHUNKS_IN_FLIGHT:
            await self._acked(inflight.popleft())
        inflight.append(await self._js.publish_async(subject, chunk, wait_stall=self._timeout_s))

    async def _acked(self, ack: asyncio.Future[Any]) -> None:
        async with asyncio.timeout(self._timeout_s):
            await ack

    async def _purge(self, subject: str) -> None:
        with contextlib.suppress(nats.errors.Error, OSError):  # the bucket's age limit removes what is left
            await self._js.purge_stream(self.stream, subject=subject)

    async def info(self, name: str) -> StoredObject | None:
        """The object's description, or None when there is no such object."""
        found = await self._info(name)
        return None if found is None else found[0]

    async def _info(self, name: str) -> tuple[StoredObject, str] | None:
        with translated(f"reading {self.bucket}"):
            try:
                raw = await self._js.get_last_msg(self.stream, self._meta_subject(name))
            except nats.js.errors.NotFoundError:
                return None
        try:
            data: dict[str, Any] = json.loads(raw.data or b"")
            if data.get("deleted"):
                return None
            digest = base64.urlsafe_b64decode(str(data.get("digest", "")).partition("=")[2] or "").hex()
            stored = StoredObject(
                name=str(data["name"]),
                size=int(data.get("size") or 0),
                sha256=digest,
                chunks=int(data.get("chunks") or 0),
                headers={str(k): _first(v) for k, v in (data.get("headers") or {}).items()},
            )
            return stored, str(data["nuid"])
        except (ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"the description of {name} in {self.bucket} is unreadable: {exc}") from None

    def chunk_subject(self, nuid: str) -> str:
        return f"$O.{self.bucket}.C.{nuid}"

    async def located(self, name: str) -> tuple[StoredObject, str] | None:
        """The object's description and its chunk subject (for ``Messaging.read``), or None."""
        found = await self._info(name)
        if found is None:
            return None
        stored, nuid = found
        return stored, self.chunk_subject(nuid)


def _first(value: Any) -> str:
    """A header value as nats-py stores it (a list of values) or as written (one)."""
    return str(value[0] if isinstance(value, list) and value else value)


async def ensure_objects(js: JetStreamContext, config: js_api.ObjectStoreConfig) -> None:
    """Create the bucket, or adopt it and bring its age limit up to date; safe from many replicas at once."""
    try:
        await js.create_object_store(config.bucket or "", config=config)
        return
    except APIError as exc:
        if exc.err_code != 10058:  # "stream name already in use with a different configuration"
            raise
    info = await js.stream_info(f"OBJ_{config.bucket}")
    info.config.max_age = config.ttl
    await js.update_stream(info.config)


async def read_range(chunks: AsyncGenerator[bytes, None], *, start: int, length: int) -> AsyncGenerator[bytes, None]:
    """Bytes ``start`` to ``start + length`` of a stream of chunks, skipping what comes before."""
    position = 0
    end = start + length
    try:
        async for chunk in chunks:
            chunk_end = position + len(chunk)
            if chunk_end > start and position < end:
                yield chunk[max(0, start - position) : min(len(chunk), end - position)]
            position = chunk_end
            if position >= end:
                return
    finally:
        await chunks.aclose()
