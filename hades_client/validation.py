"""Offline validation of a job document: the very check submit runs, so the answers agree word for word.

The rules (``schemas/job.schema.json`` plus what JSON Schema cannot say, such as unique step ids) and their
messages are owned by ``runtime.schemas``, which ships in the same distribution; it is imported on first use so
the client's other commands never load it. Operator limits (most cores, memory, networks allowed) depend on the
server's settings and are checked at submit only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hades_client.errors import Violation


class UnreadableJob(ValueError):
    """The file cannot be read or is not JSON; the message says where."""


def load_job(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableJob(f"{path}: cannot read it: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableJob(f"{path}: not valid JSON: {exc}") from exc


def job_violations(document: Any) -> list[Violation]:
    """Every schema violation of ``document`` as ``[{path, message}]``, in the server's order; [] when valid."""
    from runtime import schemas  # lazily: the one definition of the rules, shared with submit

    return [{"path": v["path"], "message": v["message"]} for v in schemas.job_violations(document)]
