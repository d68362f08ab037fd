"""The small core the Hades functions share: settings, errors, the job model, events, schemas, subject names, the
door to NATS (``runtime.messaging``), the aiohttp app factory and telemetry. Functions import it; it imports no
function (an import contract holds both)."""

from runtime.errors import HadesError, JobError, RequestError, Unavailable
from runtime.jobs import Job, JobStatus, Step, StepStatus
from runtime.settings import Settings
from runtime.subjects import Lane

__all__ = [
    "HadesError",
    "Job",
    "JobError",
    "JobStatus",
    "Lane",
    "RequestError",
    "Settings",
    "Step",
    "StepStatus",
    "Unavailable",
]
