"""JUnit XML reports: the common dialects read right, hostile files refused with a reason and nothing else hurt."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.dispatch.results import junit

DATA = Path(__file__).parent / "data" / "junit"
LIMIT = 8 * 1024 * 1024


def parse_file(name: str) -> junit.TestSummary:
    return junit.parse((DATA / name).read_bytes(), max_bytes=LIMIT)


def test_maven_surefire() -> None:
    summary = parse_file("surefire-TEST-com.example.CalculatorTest.xml")
    assert summary.counts() == {"tests": 4, "passed": 1, "failures": 1, "errors": 1, "skipped": 1, "time_s": 0.036}
    failure, error = summary.failed
    assert (failure.suite, failure.classname, failure.name, failure.kind) == (
        "com.example.CalculatorTest",
        "com.example.CalculatorTest",
        "dividesByZero",
        "failure",
    )
    assert failure.message == "expected: <Infinity> but was: <NaN>"
    assert "CalculatorTest.java:27" in failure.output and "dividing 1 by 0" in failure.output
    assert (error.kind, error.message) == ("error", 'For input string: "x"')


def test_gradle() -> None:
    summary = parse_file("gradle-TEST-org.acme.ParserTest.xml")
    assert summary.counts() == {"tests": 3, "passed": 2, "failures": 1, "errors": 0, "skipped": 0, "time_s": 1.234}
    [case] = summary.failed
    assert case.name == "parses nested lists()" and "ParserTest.kt:41" in case.output


def test_pytest_junitxml() -> None:
    summary = parse_file("pytest-junit.xml")
    assert summary.counts() == {"tests": 5, "passed": 2, "failures": 1, "errors": 1, "skipped": 1, "time_s": 0.007}
    assert [(c.suite, c.name, c.kind) for c in summary.failed] == [
        ("pytest", "test_median[even]", "failure"),
        ("pytest", "test_io", "error"),
    ]
    assert "assert 2.5 == 2" in summary.failed[0].output


def test_junit5_legacy_reporter() -> None:
    summary = parse_file("junit5-legacy-TEST-junit-jupiter.xml")
    assert summary.counts() == {"tests": 3, "passed": 2, "failures": 1, "errors": 0, "skipped": 0, "time_s": 0.036}
    [case] = summary.failed
    assert (case.suite, case.classname, case.name) == ("JUnit Jupiter", "com.example.GreeterTest", "shouts()")


def test_summaries_of_several_reports_add_up_and_failed_cases_are_capped() -> None:
    total = junit.TestSummary()
    for name in sorted(p.name for p in DATA.glob("*.xml")):
        total.add(parse_file(name))
    assert (total.tests, total.failures, total.errors, total.skipped) == (15, 4, 2, 2)
    cases = "".join(
        f'<testcase name="t{i}"><failure message="m{i}">{"x" * 5000}</failure></testcase>' for i in range(80)
    )
    many = junit.parse(f"<testsuite name='s'>{cases}</testsuite>".encode(), max_bytes=LIMIT)
    assert many.failures == 80 and len(many.failed) == junit.MAX_FAILED_CASES
    assert many.failed_dropped == 80 - junit.MAX_FAILED_CASES
    assert all(len(c.output) <= junit.MAX_OUTPUT_CHARS for c in many.failed)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<testsuite name="x"><testcase name="t"><failure message="&lol9;"/></testcase></testsuite>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<testsuite name="x"><testcase name="t"><failure message="&secret;"/></testcase></testsuite>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE testsuite SYSTEM "http://198.51.100.7/evil.dtd">
<testsuite name="x"><testcase name="t"/></testsuite>"""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (BILLION_LAUGHS, "has a DTD"),
        (EXTERNAL_ENTITY, "has a DTD"),
        (EXTERNAL_DTD, "has a DTD"),
        (b"<testsuite>" + b"<x>" * 10_000 + b"</x>" * 10_000 + b"</testsuite>", "nests elements more than 32 deep"),
        (b"<testsuite><testcase name='t'>", "is not well-formed XML"),
        (b"<html><body>oops</body></html>", "is not JUnit XML (its root is <html>)"),
        (b"", "is not well-formed XML"),
    ],
)
def test_hostile_or_broken_reports_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(junit.ReportRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        junit.parse(data, max_bytes=LIMIT)


def test_a_50_megabyte_report_is_refused_by_its_size_before_any_parsing() -> None:
    big = b"<testsuite>" + b"<testcase name='t'/>" * (50 * 1024 * 1024 // 20) + b"</testsuite>"
    with pytest.raises(junit.ReportRefused, match=f"is {len(big)} bytes; reports larger than {LIMIT} bytes"):
        junit.parse(big, max_bytes=LIMIT)


def test_a_refused_report_leaves_the_parser_usable() -> None:
    with pytest.raises(junit.ReportRefused):
        junit.parse(BILLION_LAUGHS, max_bytes=LIMIT)
    assert parse_file("gradle-TEST-org.acme.ParserTest.xml").tests == 3
