"""The collector's replica keeps the records it wrote last (``RecordStore.update``): another writer's change in
between is never overwritten from that memory."""

from __future__ import annotations

import time
import uuid
from typing import Any

from functions.logs import callbacks, records
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
        def change(record: records.JobRecord | None) -> records.JobRecord:
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


async def test_a_change_that_finds_nothing_to_do_in_a_replica_s_memory_asks_the_bucket(
    conn: messaging.Messaging, settings: Settings
) -> None:
    # A replica that wrote a job's record while it ran remembered it; another replica wrote the job's end. The
    # periodic look-up then found the callback due, but its claim was tried on the remembered (running) record:
    # "not due", no read of the bucket, and the callback was never sent from this replica.
    mine = await RecordStore.open(conn, settings)
    theirs = await RecordStore.open(conn, settings)
    job_id = str(uuid.uuid4())

    def running(record: records.JobRecord | None) -> records.JobRecord:
        new = records.new_record(job_id)
        new.update(status="running", callback=records.new_callback("http://example.test/hook"))
        return new

    def ended(record: records.JobRecord | None) -> records.JobRecord:
        assert record is not None
        return {**record, "status": "succeeded"}

    await mine.update(job_id, running)
    await theirs.update(job_id, ended)
    claimed = await mine.update(job_id, lambda r: callbacks.claim(r, replica="mine", lease=60.0, now=time.time()))
    assert claimed is not None and claimed["callback"]["state"] == "sending"
