"""Issue 20, finding 7: header bytes trickled slowly (slowloris) no longer hold a connection for 78 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from functions.submit.handlers import create_app
from runtime import headerguard
from runtime.settings import HttpSettings
from tests.helpers import make_settings

TRICKLE_FOR_S = 20.0
"""How long the test keeps trickling at most: far past the 1 s deadline, far below aiohttp's 75 s keep-alive."""


@pytest.fixture
async def server(aiohttp_server: Any, clean_nats: str) -> AsyncIterator[Any]:
    yield await aiohttp_server(create_app(make_settings(clean_nats, HADES_HEADER_READ_TIMEOUT_SECONDS="1")))
    headerguard.install(HttpSettings().header_read_timeout_s)  # the deadline is per process: back to the default


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), 0.01) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


@pytest.mark.timeout(60)
async def test_headers_trickled_byte_by_byte_get_the_connection_closed(server: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    header = b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 1000
    deadline = time.monotonic() + TRICKLE_FOR_S
    closed = False
    try:
        for byte in header:
            if time.monotonic() > deadline:
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            await asyncio.sleep(0.1)
            if await _closed(reader):
                closed = True
                break
    finally:
        writer.close()
    assert closed, f"the server still read header bytes after {TRICKLE_FOR_S:g} s"


@pytest.mark.timeout(60)
async def test_a_connection_that_sends_nothing_is_closed(server: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(), TRICKLE_FOR_S) == b""
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_not_cut(server: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            status = await reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            length = 15  # {"status":"ok"}
            await reader.readexactly(length)
            await asyncio.sleep(1.5)  # idle past the header deadline: a kept-alive connection is not timed
    finally:
        writer.close()
