"""One logging set-up for all three functions: plain lines for a terminal, or JSON lines for a log collector.

Plain: one line per record, prefixed with the function name. JSON (``HADES_LOG_FORMAT=json``): one object per line
with ``time``, ``level``, ``service``, ``logger``, ``message``, and on every line about a job its ``job_id`` and
``trace_id`` (the job id of the current job context, ``job_scope``, or the one the message names).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.config
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
from opentelemetry import trace

_JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("hades_job_id", default=None)
_JOB_IN_MESSAGE = re.compile(r"\bjob ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")


@contextlib.contextmanager
def job_scope(job_id: str) -> Iterator[None]:
    """Every record logged inside (this task and the tasks it starts) carries ``job_id``."""
    token = _JOB_ID.set(job_id)
    try:
        yield
    finally:
        _JOB_ID.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": message,
        }
        job_id = _JOB_ID.get()
        if job_id is None and (match := _JOB_IN_MESSAGE.search(message)):
            job_id = match.group(1)
        if job_id is not None:
            line["job_id"] = job_id
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure_logging(service: str, level: str, *, log_format: str = "plain") -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {
                    "format": f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
                    "datefmt": "%Y-%m-%dT%H:%M:%S",
                },
                "json": {"()": JsonFormatter, "service": service},
            },
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": log_format}},
            "root": {"handlers": ["stderr"], "level": level.upper()},
            # Access logs of every probe and scrape would drown the job lines.
            "loggers": {"aiohttp.access": {"level": "WARNING"}},
        }
    )
