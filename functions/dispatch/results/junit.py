"""JUnit XML test reports, read as the untrusted input they are: into a summary and the failed cases.

A report comes out of a job's own container, so its author may be hostile. ``defusedxml`` refuses every DTD
(hence every entity: billion laughs, external entities and their network or file reads) before expat expands
anything; the size is capped before parsing and the nesting depth while parsing (a valid report is 3-4 levels
deep), so neither memory nor time grows with what a job writes. The tree is never walked recursively.

The dialects differ in small ways, all read here: Maven Surefire and Gradle write one ``<testsuite>`` per file
(Gradle counts ``skipped``, Surefire also writes ``<system-out>`` per case); pytest ``--junitxml`` wraps one
``<testsuite>`` in ``<testsuites>``; JUnit 5's legacy reporter nests them under ``<testsuites>`` with a
``<properties>`` block. A case fails with ``<failure>`` and errs with ``<error>``; ``<skipped>`` skips it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
from defusedxml.ElementTree import iterparse

MAX_DEPTH = 32
"""Deeper than any real report (testsuites/testsuite/testcase/failure is 4); 10,000-deep input stops here."""
MAX_FAILED_CASES = 50
"""Failed cases kept per job: the record (and the terminal event that carries it) stays small."""
MAX_MESSAGE_CHARS = 1000
MAX_OUTPUT_CHARS = 2000
"""The excerpt of a failed case's text and output kept: the start of a stack trace is what a reader needs."""


class ReportRefused(ValueError):
    """The report is not safe or not JUnit XML; the message says why, in words for the record."""


@dataclass
class FailedCase:
    suite: str
    name: str
    classname: str
    kind: str  # failure | error
    message: str
    output: str

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "name": self.name,
            "classname": self.classname,
            "kind": self.kind,
            "message": self.message,
            "output": self.output,
        }


@dataclass
class TestSummary:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    time_s: float = 0.0
    failed: list[FailedCase] = field(default_factory=list)
    failed_dropped: int = 0
    """Failed cases past ``MAX_FAILED_CASES`` (counted, not kept)."""

    @property
    def passed(self) -> int:
        return max(0, self.tests - self.failures - self.errors - self.skipped)

    def add(self, other: TestSummary) -> None:
        self.tests += other.tests
        self.failures += other.failures
        self.errors += other.errors
        self.skipped += other.skipped
        self.time_s = round(self.time_s + other.time_s, 3)
        for case in other.failed:
            if len(self.failed) < MAX_FAILED_CASES:
                self.failed.append(case)
            else:
                self.failed_dropped += 1
        self.failed_dropped += other.failed_dropped

    def counts(self) -> dict[str, Any]:
        return {
            "tests": self.tests,
            "passed": self.passed,
            "failures": self.failures,
            "errors": self.errors,
            "skipped": self.skipped,
            "time_s": self.time_s,
        }


def parse(data: bytes, *, max_bytes: int, mask: Callable[[str], str] = str) -> TestSummary:
    """The summary of one JUnit XML report, or ``ReportRefused`` with the reason. ``mask`` makes a case's text safe
    (the job's secrets) before it is cut to its excerpt: cut first, a secret split at the cut would stay half."""
    if len(data) > max_bytes:
        raise ReportRefused(f"is {len(data)} bytes; reports larger than {max_bytes} bytes are not parsed")
    summary = TestSummary()
    depth = 0
    suites: list[str] = []
    saw_root = False
    try:
        events = iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True)
        for event, element in events:
            if event == "start":
                depth += 1
                if depth > MAX_DEPTH:
                    raise ReportRefused(f"nests elements more than {MAX_DEPTH} deep")
                if not saw_root:
                    saw_root = True
                    if _local(element.tag) not in ("testsuites", "testsuite"):
                        raise ReportRefused(f"is not JUnit XML (its root is <{_local(element.tag)[:40]}>)")
                if _local(element.tag) == "testsuite":
                    suites.append(element.get("name") or "")
                continue
            depth -= 1
            tag = _local(element.tag)
            if tag == "testcase":
                _count_case(element, suites[-1] if suites else "", summary, mask)
                element.clear()  # a case is done with: its text and children free their memory now
            elif tag == "testsuite":
                if suites:
                    suites.pop()
                element.clear()
    except defusedxml.DTDForbidden:
        raise ReportRefused("has a DTD (<!DOCTYPE …>), which reports never need and entity attacks do") from None
    except defusedxml.EntitiesForbidden:
        raise ReportRefused("declares entities, which reports never need and entity attacks do") from None
    except defusedxml.ExternalReferenceForbidden:
        raise ReportRefused("refers to an external resource, which is never fetched") from None
    except defusedxml.DefusedXmlException as exc:
        raise ReportRefused(f"is not safe XML ({type(exc).__name__})") from None
    except ParseError as exc:
        raise ReportRefused(f"is not well-formed XML ({exc})") from None
    if not saw_root:
        raise ReportRefused("is empty")
    return summary


def _count_case(case: Element, suite: str, summary: TestSummary, mask: Callable[[str], str]) -> None:
    summary.tests += 1
    summary.time_s = round(summary.time_s + _seconds(case.get("time")), 3)
    outcome: Element | None = None
    output: list[str] = []
    for child in case:
        tag = _local(child.tag)
        if tag in ("failure", "error") and outcome is None:
            outcome = child
        elif tag == "skipped":
            summary.skipped += 1
            return
        elif tag in ("system-out", "system-err") and child.text:
            output.append(child.text)
    if outcome is None:
        return
    kind = _local(outcome.tag)
    if kind == "failure":
        summary.failures += 1
    else:
        summary.errors += 1
    if len(summary.failed) >= MAX_FAILED_CASES:
        summary.failed_dropped += 1
        return
    message = outcome.get("message") or (outcome.get("type") or "")
    text = "\n".join(t.strip("\n") for t in (outcome.text, *output) if t and t.strip())
    summary.failed.append(
        FailedCase(
            suite=_cap(mask(suite), 256),
            name=_cap(mask(case.get("name") or ""), 256),
            classname=_cap(mask(case.get("classname") or ""), 256),
            kind=kind,
            message=_cap(mask(message), MAX_MESSAGE_CHARS),
            output=_cap(mask(text), MAX_OUTPUT_CHARS),
        )
    )


def _seconds(text: str | None) -> float:
    """``time`` attributes: seconds, sometimes with a thousands separator (Surefire in some locales)."""
    if not text:
        return 0.0
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


def _local(tag: Any) -> str:
    text = str(tag)
    return text.rsplit("}", 1)[-1]


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
