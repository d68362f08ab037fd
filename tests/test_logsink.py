"""Log lines on their way to NATS: split, masked, capped, batched and stored in order."""

from __future__ import annotations

from functions.dispatch.dispatcher import LanePicker
from functions.dispatch.logsink import LogSink, split_line
from runtime import messaging
from runtime.subjects import Lane
from tests.helpers import make_settings
from tests.observe import StoredEvents


def test_long_lines_split_on_character_boundaries() -> None:
    pieces = split_line("é" * 10, 5)
    assert "".join(pieces) == "é" * 10
    assert all(len(p.encode()) <= 5 for p in pieces)
    assert split_line("short", 5) == ["short"]


async def test_lines_arrive_in_order_with_secrets_masked(
    conn: messaging.Messaging, stored: StoredEvents, clean_nats: str
) -> None:
    settings = make_settings(clean_nats).dispatch
    sink = LogSink(conn, job_id="job-a", attempt=1, settings=settings, secrets=["hunter22", "no"])
    for i in range(1200):
        sink.add(1, "stdout" if i % 2 else "stderr", f"line {i} token=hunter22 no", at="2026-01-01T00:00:00Z")
    await sink.close()
    lines = await stored.log_lines("job-a")
    assert [line["seq"] for line in lines] == list(range(1, 1201))
    assert lines[7]["message"] == "line 7 token=*** no"  # short values are not treated as secrets
    assert lines[0]["stream"] == "stderr" and lines[1]["stream"] == "stdout"


async def test_the_per_job_cap_writes_one_marker_and_drops_the_rest(
    conn: messaging.Messaging, stored: StoredEvents, clean_nats: str
) -> None:
    settings = make_settings(clean_nats, HADES_JOB_LOG_MAX_BYTES="2048", HADES_LOG_LINE_MAX_BYTES="256").dispatch
    sink = LogSink(conn, job_id="job-b", attempt=1, settings=settings)
    sink.add(1, "stdout", "x" * 1000, at="t")  # split into 4 pieces of ≤ 256 bytes
    for _ in range(100):
        sink.add(1, "stdout", "y" * 100, at="t")
    await sink.close()
    lines = await stored.log_lines("job-b")
    assert [len(line["message"]) for line in lines[:4]] == [256, 256, 256, 232]
    assert lines[-1]["stream"] == "system" and "log limit" in lines[-1]["message"]
    assert sum(len(line["message"]) + 1 for line in lines[:-1]) <= 2048
    assert sink.dropped_lines > 0


def test_lanes_are_served_by_weight_and_low_never_starves() -> None:
    picker = LanePicker((6, 3, 1))
    picks = [picker.order([Lane.HIGH, Lane.NORMAL, Lane.LOW])[0] for _ in range(100)]
    assert picks.count(Lane.HIGH) == 60 and picks.count(Lane.NORMAL) == 30 and picks.count(Lane.LOW) == 10
    assert picks[0] == Lane.HIGH
    assert picker.order([Lane.LOW]) == [Lane.LOW]
    assert LanePicker((6, 3, 1)).order([Lane.LOW, Lane.HIGH])[:2] == [Lane.HIGH, Lane.LOW]


async def test_each_line_of_a_multi_line_secret_is_masked(
    conn: messaging.Messaging, stored: StoredEvents, clean_nats: str
) -> None:
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END KEY-----"
    sink = LogSink(conn, job_id="job-c", attempt=1, settings=make_settings(clean_nats).dispatch, secrets=[key])
    for line in key.splitlines():  # what `cat key.pem` prints
        sink.add(1, "stdout", line, at="t")
    await sink.close()
    printed = [line["message"] for line in await stored.log_lines("job-c")]
    assert printed == ["***"] * 4


async def test_output_that_grows_when_encoded_is_still_stored_whole(
    conn: messaging.Messaging, stored: StoredEvents, clean_nats: str
) -> None:
    """Escape sequences take 6 bytes each in JSON: batches are sized by what is stored, never over NATS' limit."""
    sink = LogSink(conn, job_id="job-esc", attempt=1, settings=make_settings(clean_nats).dispatch)
    noisy = ["\x1b" * 16_000 + f" line {i}" for i in range(40)]  # ~3.8 MB once encoded
    for text in noisy:
        sink.add(1, "stdout", text, at="2026-12-01T00:00:00Z")
    await sink.close()
    assert sink.lost_lines == 0
    assert [line["message"] for line in await stored.log_lines("job-esc")] == noisy
