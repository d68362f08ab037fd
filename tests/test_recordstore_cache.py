"""The collector's replica keeps the records it wrote last (``RecordStore.update``): another writer's change in
between is never overwritten from that memory."""

from __future__ import annotations

import uuid
from typing import Any

from functions.logs import records
from functions.logs.recordstore import RecordStore
from runtime import messaging
from runtime.settings import Settings


async def test_a_record_changed_by_another_writer_is_not_overwritten_from_a_replica_s_memory(
    conn: messaging.Messaging, settings: Settings
) -> None:
    # The collector writes from the record it wrote last (no read back); another replica's (or a callback's) write
    # in between must still survive its next change.
    mine = await RecordStore.open(conn, settings)
    theirs = await RecordStore.open(conn, settings)
    job_id = str(uuid.uuid4())

    def with_name(name: str) -> Any:
        def change(record: records.Record | None) -> records.Record:
            new = dict(record or records.new_record(job_id))
            new["steps"] = [*new.get("steps", []), {"id": len(new.get("steps", [])) + 1, "name": name}]
            return new  # type: ignore[return-value]

        return change

    await mine.update(job_id, with_name("mine 1"))
    await theirs.update(job_id, with_name("theirs"))
    await mine.update(job_id, with_name("mine 2"))
    stored = await theirs.get(job_id)
    assert stored is not None
    assert [step["name"] for step in stored["steps"]] == ["mine 1", "theirs", "mine 2"]
