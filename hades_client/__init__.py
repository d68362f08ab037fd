"""Hades' Python client (sync and async) and the ``hades`` command line.

::

    from hades_client import HadesClient

    with HadesClient(api_key="…") as hades:
        job = hades.submit({"name": "hi", "steps": [{"id": 1, "image": "alpine", "script": "echo hi"}]})
        for event in hades.stream(job.id):
            print(event)
"""

from hades_client.asyncclient import AsyncHadesClient
from hades_client.client import HadesClient
from hades_client.errors import ApiError, ConnectionFailed, HadesClientError, InvalidJob, StreamBroken
from hades_client.models import EndEvent, Job, JobStatus, LineEvent, StatusEvent, Submitted
from hades_client.protocol import ReconnectPolicy, RetryPolicy

__all__ = [
    "ApiError",
    "AsyncHadesClient",
    "ConnectionFailed",
    "EndEvent",
    "HadesClient",
    "HadesClientError",
    "InvalidJob",
    "Job",
    "JobStatus",
    "LineEvent",
    "ReconnectPolicy",
    "RetryPolicy",
    "StatusEvent",
    "StreamBroken",
    "Submitted",
]
