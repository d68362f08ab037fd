"""What the Hades functions share: settings, NATS topology and messaging, schemas, the job model, events,
executors, telemetry and the aiohttp app factory. Functions import these modules; nothing here imports them."""

from runtime.errors import HadesError
from runtime.settings import Settings

__all__ = ["HadesError", "Settings"]
