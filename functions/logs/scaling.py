"""``GET /scaling``: how many jobs the cluster holds, the number KEDA scales dispatch on (its ``metrics-api`` trigger).

``jobs`` is every queued and running job of every lane and tenant, from one ``CONSUMER.LIST`` and one
``STREAM.INFO`` however many tenants there are (``runtime.tenantqueues``): each dispatch consumer's undelivered
(``num_pending``) and unacked (``num_ack_pending``: running, or handed back for redelivery) jobs, and every job
stored on a lane and tenant no dispatcher has made a consumer for yet. A job's message is acked only at its end,
so a running job still counts and keeps its replica. Not ``HADES_JOBS``' stored messages as such: a message whose
deliveries ran out without an ack (its last attempt's dispatcher died) stays stored, but no consumer delivers it
again, and counting it would keep a dispatcher up for good. KEDA's ``nats-jetstream`` trigger counts one consumer,
and since each tenant has its own dispatch consumer in a lane (``dispatch-<lane>--<tenant>``, made on demand) no
fixed set of such triggers sees every job; the HPA takes the largest of its triggers, not their sum, either way.
``queued`` and ``running`` (the dispatch consumers' ``num_pending`` and ``num_ack_pending``, summed) are for
people: a tenant's jobs are only in them once its consumer exists, so they may sum to less than ``jobs``.

Open like ``/metrics`` (KEDA's operator calls it, and it tells counts only); ``503`` naming the cause while NATS
cannot be read, on which KEDA keeps the replicas it has (or its ``fallback``).
"""

from __future__ import annotations

from typing import Any, TypedDict

from aiohttp import web

from runtime import openapi, tenantqueues
from runtime.app import json_response
from runtime.errors import Unavailable
from runtime.messaging import MESSAGING

ROUTE = "/scaling"
RETRY_AFTER_S = 5
"""KEDA's polling interval for dispatch: asking sooner would not help."""


class Scaling(TypedDict):
    jobs: int
    queued: int
    running: int


async def get_scaling(request: web.Request) -> web.Response:
    conn = request.app[MESSAGING]
    if not conn.connected:  # answer at once: KEDA's HTTP client gives up after 3 s
        raise Unavailable("NATS is not reachable: the number of jobs is unknown", retry_after_s=RETRY_AFTER_S)
    counts = (await tenantqueues.snapshot(conn)).by_key.values()
    dispatch = [each for each in counts if each.consumer is not None]
    answer: Scaling = {
        "jobs": sum(each.waiting + each.running for each in counts),
        "queued": sum(each.waiting for each in dispatch),
        "running": sum(each.running for each in dispatch),
    }
    return json_response(answer)


def add_routes(app: web.Application) -> None:
    app.router.add_get(ROUTE, get_scaling)


def openapi_paths(unavailable: dict[str, Any]) -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    schema = {
        "type": "object",
        "required": ["jobs", "queued", "running"],
        "properties": {
            "jobs": {**count, "description": "Every queued and running job, of every lane and tenant"},
            "queued": {**count, "description": "Jobs the dispatch consumers have not handed out yet"},
            "running": {**count, "description": "Jobs the dispatch consumers handed out and not yet acked"},
        },
    }
    return {
        ROUTE: {
            "get": {
                "summary": "How many jobs the cluster holds: what KEDA scales dispatch on (`jobs`); open, counts only",
                "responses": {"200": openapi.json_body("The counts", schema), "503": unavailable},
            }
        }
    }
