"""NUL and ANSI escapes in a job's output (issue 13, finding 12), as docs/security.md documents them: kept exactly
in the lines, JSON-escaped in JSON and SSE (so no raw control byte reaches those readers), raw in plain text."""

from __future__ import annotations

from typing import Any

from functions.logs.handlers import create_app
from runtime import messaging
from tests.fakes import record_when, submitted
from tests.helpers import make_settings

MESSAGE = "a\x00b \x1b[31mred\x1b[0m \x1b]0;title\x07"


async def test_control_characters_are_escaped_in_json_and_sse_and_raw_in_text(
    aiohttp_client: Any, conn: messaging.Messaging, clean_nats: str
) -> None:
    client = await aiohttp_client(create_app(make_settings(clean_nats)))
    dispatch = await submitted(conn, steps=1)
    await dispatch.run({1: [MESSAGE]})
    await record_when(client, dispatch.id, status="succeeded")

    response = await client.get(f"/jobs/{dispatch.id}/logs")
    raw_json = await response.read()
    assert b"\x00" not in raw_json and b"\x1b" not in raw_json
    assert (await response.json())["logs"][0]["logs"][0]["message"] == MESSAGE

    raw_sse = await (await client.get(f"/jobs/{dispatch.id}/logs/stream")).read()
    assert b"\x00" not in raw_sse and b"\x1b" not in raw_sse and b"a\\u0000b \\u001b[31mred" in raw_sse

    text = await (await client.get(f"/jobs/{dispatch.id}/logs?format=text")).read()
    assert text == (MESSAGE + "\n").encode()
