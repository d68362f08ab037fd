"""A KV bucket through the door: get, create, compare-and-set update; conflicts as ``RevisionConflict``."""

from __future__ import annotations

from dataclasses import dataclass

import nats.js.errors
from nats.js.kv import KeyValue

from runtime.messaging.errors import translated


class RevisionConflict(Exception):
    """The key was written by someone else since it was read (or created by someone else first)."""


@dataclass(frozen=True)
class Entry:
    value: bytes
    revision: int


class Bucket:
    def __init__(self, kv: KeyValue, *, name: str) -> None:
        self._kv = kv
        self.name = name
        self.stream = f"KV_{name}"
        """The stream behind the bucket, for reading it in bulk (``Messaging.read``)."""
        self.subjects = f"$KV.{name}.>"

    def key_subject(self, key: str) -> str:
        """The subject ``key`` is stored under in ``stream`` (for reading many at once: ``Messaging.last_of_each``)."""
        return f"$KV.{self.name}.{key}"

    async def get(self, key: str) -> Entry | None:
        with translated(f"reading {self.name}"):
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return None
        return Entry(value=entry.value or b"", revision=entry.revision or 0)

    async def put(self, key: str, value: bytes, *, revision: int) -> int:
        """Create the key (``revision`` 0) or update it from ``revision``; the new revision.

        ``RevisionConflict`` when another writer came first: read again and re-apply.
        """
        with translated(f"writing {self.name}"):
            try:
                if revision:
                    return int(await self._kv.update(key, value, last=revision))
                return int(await self._kv.create(key, value))
            except nats.js.errors.KeyWrongLastSequenceError as exc:
                raise RevisionConflict(key) from exc

    async def delete(self, key: str, *, revision: int) -> None:
        """Delete the key if it is still at ``revision``; ``RevisionConflict`` when someone wrote it since."""
        with translated(f"deleting from {self.name}"):
            try:
                await self._kv.delete(key, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError as exc:
                raise RevisionConflict(key) from exc
