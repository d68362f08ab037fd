"""A job's results over HTTP: its test summary, the list of the files it kept, and each file, streamed.

The record says what was kept (``results``, from the terminal event); the bytes are in the ``HADES_RESULTS``
Object Store, read in bounded batches straight into the response (never whole in memory, never on disk), with a
single ``Range`` (``bytes=a-b``, ``a-``, ``-n``) answered ``206``. A file the record lists but the store no longer
has (past ``HADES_EVENTS_MAX_AGE_SECONDS``) is a 404 saying so.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from functions.logs import recordstore
from functions.logs.records import JobRecord
from runtime import jobs, subjects
from runtime.app import SETTINGS, json_response, problem_response
from runtime.errors import HadesError, JobNotFound, NotFound, RequestError, to_problem
from runtime.messaging import MESSAGING, Objects, read_range, topology

log = logging.getLogger(__name__)

RESULTS_OBJECTS = web.AppKey("results_objects", Objects)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(RequestError):
    status = 416
    kind = "range-not-satisfiable"
    title = "Range not satisfiable"


class ArtifactNotFound(NotFound):
    kind = "artifact-not-found"
    title = "Artifact not found"


async def objects_context(app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx`` entry: the results bucket, opened (and created if missing) at start-up."""
    app[RESULTS_OBJECTS] = await app[MESSAGING].objects(topology.results_bucket_config(app[SETTINGS]))
    yield


async def _record(request: web.Request) -> JobRecord:
    job_id = request.match_info["job_id"]
    record = await request.app[recordstore.RECORDS].load(job_id) if jobs.is_job_id(job_id) else None
    if record is None:
        raise JobNotFound(job_id)
    return record


def _results(record: JobRecord) -> dict[str, Any]:
    return record.get("results") or {}


async def list_artifacts(request: web.Request) -> web.Response:
    record = await _record(request)
    results = _results(record)
    return json_response(
        {
            "job_id": record["id"],
            "status": record["status"],
            "artifacts": results.get("artifacts", []),
            "skipped": results.get("skipped", []),
            "warnings": results.get("warnings", []),
        }
    )


async def get_tests(request: web.Request) -> web.Response:
    record = await _record(request)
    results = _results(record)
    return json_response(
        {
            "job_id": record["id"],
            "status": record["status"],
            "tests": results.get("tests"),
            "failed_tests": results.get("failed_tests", []),
            "failed_tests_dropped": results.get("failed_tests_dropped", 0),
            "reports": results.get("reports", []),
        }
    )


async def get_artifact(request: web.Request) -> web.StreamResponse:
    record = await _record(request)
    name = request.match_info["name"]
    listed = next((a for a in _results(record).get("artifacts", []) if a.get("name") == name), None)
    if listed is None:
        raise ArtifactNotFound(f"job {record['id']} kept no file named {name!r} (see GET /jobs/{{id}}/artifacts)")
    objects = request.app[RESULTS_OBJECTS]
    found = await objects.located(subjects.result_object(record["id"], name))
    if found is None:
        raise ArtifactNotFound(f"{name!r} of job {record['id']} is no longer stored (kept as long as job events)")
    stored, chunk_subject = found
    size = stored.size
    start, length, status = 0, size, 200
    headers = {
        "Content-Type": str(listed.get("content_type") or "application/octet-stream"),
        "Accept-Ranges": "bytes",
        "ETag": f'"{stored.sha256}"',
        "Content-Disposition": f'attachment; filename="{_safe_filename(name)}"',
        # A job's file is the submitter's content: never sniffed into another type, never run as a page of ours.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    wanted = request.headers.get("Range")
    if wanted is not None:
        span = _range(wanted, size)
        if span is None:
            refusal = RangeNotSatisfiable(f"Range {wanted[:60]!r} is not one range of bytes within its {size} bytes")
            return problem_response(to_problem(refusal), headers={"Content-Range": f"bytes */{size}"})
        start, length, status = span[0], span[1], 206
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    chunks = read_range(request.app[MESSAGING].object_chunks(objects, chunk_subject), start=start, length=length)
    async with contextlib.aclosing(chunks):
        first = await anext(chunks, b"")  # a broker failure is still a 503 here, before the status goes out
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            if first:
                await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
            await response.write_eof()
        except HadesError as exc:  # too late for a status: cut the connection so the client sees a short body
            log.warning("job %s: artifact %s cut short: %s", record["id"], name, exc.detail)
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            log.info("job %s: the client left during artifact %s", record["id"], name)
    return response


def _range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, length)`` of a single byte range within ``size`` bytes, or None when not satisfiable."""
    match = _RANGE.match(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # the last n bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            return None
        return max(0, size - suffix), min(suffix, size)
    start = int(match[1])
    end = int(match[2]) if match[2] else size - 1
    if start >= size or end < start:
        return None
    end = min(end, size - 1)
    return start, end - start + 1


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.basename(name)) or "artifact"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/jobs/{job_id}/tests", get_tests)
    app.router.add_get("/jobs/{job_id}/artifacts", list_artifacts)
    app.router.add_get("/jobs/{job_id}/artifacts/{name:.+}", get_artifact)
