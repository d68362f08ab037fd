"""What collecting a job's results found: the shape that travels in the terminal event and lands on the record.

``results`` on the record (and in ``GET /jobs/{id}/tests``, the native callback and the CLI) is ``to_json()``:

- ``tests``: ``{tests, passed, failures, errors, skipped, time_s}`` summed over the parsed reports (None when
  the job asked for no reports), ``failed_tests``: up to 50 failed cases ``{suite, name, classname, kind,
  message, output}``, ``failed_tests_dropped``: how many more failed;
- ``reports``: per JUnit file ``{path, parsed, reason?}``;
- ``artifacts``: per kept file ``{name, path, size, sha256, content_type, kind}`` (``kind``: artifact | report);
- ``skipped``: files not kept ``{path, reason}`` (over a limit); ``warnings``: what else went wrong (a path that
  matched nothing, a volume that could not be read). None of it fails the job.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from typing import Any

from functions.dispatch.results.junit import TestSummary

MAX_LISTED = 50
"""Skipped files and warnings listed per job (the rest are counted): the record stays small."""


@dataclass(frozen=True)
class KeptFile:
    name: str
    path: str
    size: int
    sha256: str
    content_type: str
    kind: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "kind": self.kind,
        }


@dataclass
class Results:
    wants_tests: bool
    tests: TestSummary = field(default_factory=TestSummary)
    reports: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[KeptFile] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unlisted: int = 0

    def skip(self, path: str, reason: str) -> None:
        if len(self.skipped) < MAX_LISTED:
            self.skipped.append({"path": path, "reason": reason})
        else:
            self.unlisted += 1

    def warn(self, text: str) -> None:
        if len(self.warnings) < MAX_LISTED:
            self.warnings.append(text)
        else:
            self.unlisted += 1

    @property
    def kept_bytes(self) -> int:
        return sum(f.size for f in self.artifacts)

    def to_json(self) -> dict[str, Any]:
        return {
            "tests": self.tests.counts() if self.wants_tests else None,
            "failed_tests": [case.to_json() for case in self.tests.failed],
            "failed_tests_dropped": self.tests.failed_dropped,
            "reports": self.reports,
            "artifacts": [f.to_json() for f in self.artifacts],
            "skipped": self.skipped,
            "warnings": self.warnings,
            "unlisted": self.unlisted,
        }


def content_type(name: str) -> str:
    if name.endswith(".jar"):
        return "application/java-archive"
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"
