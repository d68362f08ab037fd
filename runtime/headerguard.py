"""A deadline for a request's headers: a client trickling header bytes (slowloris) is cut off, not waited for.

aiohttp has no header-read timeout: its keep-alive timer is pushed back by every byte, so a client sending one
header byte a second held a connection for 78 s (issue 20, finding 7), and enough such clients hold every socket.
``install`` wraps ``RequestHandler``'s ``connection_made`` and ``data_received`` (as ``runtime.app`` already
replaces its ``handle_error``): from a new connection, or from the first byte of a request while none is being
handled, the request's headers must be complete within ``header_timeout_s``; if they are not, the connection is
closed. A request being handled (its body, the answer) is not timed here: the body has its own deadline
(``HADES_BODY_READ_TIMEOUT_SECONDS``), and an idle keep-alive connection, having sent nothing, starts no timer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

_timers: dict[RequestHandler, asyncio.TimerHandle] = {}
"""The running deadline of each connection that is waiting for a request's headers."""
_timeout_s: list[float] = [0.0]
"""The deadline in seconds (0: off); one value per process, set by ``install``."""

_original_made = RequestHandler.connection_made
_original_received = RequestHandler.data_received
_original_lost = RequestHandler.connection_lost


def _start(handler: RequestHandler) -> None:
    seconds = _timeout_s[0]
    if seconds <= 0 or handler in _timers:
        return
    loop = asyncio.get_running_loop()
    _timers[handler] = loop.call_later(seconds, _expire, handler, handler._request_count)


def _stop(handler: RequestHandler) -> None:
    timer = _timers.pop(handler, None)
    if timer is not None:
        timer.cancel()


def _expire(handler: RequestHandler, count_at_start: int) -> None:
    _timers.pop(handler, None)
    if handler._request_count != count_at_start or handler._current_request is not None:
        return  # the headers came (the message was parsed): nothing to cut off
    if handler.transport is not None:
        peer = handler.transport.get_extra_info("peername")
        log.info("closing a connection from %s: no complete request headers within %g s", peer, _timeout_s[0])
    handler.force_close()


def _connection_made(self: RequestHandler, transport: asyncio.BaseTransport) -> None:
    _original_made(self, transport)
    _start(self)  # a connection that sends nothing at all is timed too


def _data_received(self: RequestHandler, data: bytes) -> None:
    before = self._request_count
    _original_received(self, data)
    if self._request_count != before:
        _stop(self)  # a request's headers are complete
    elif self._current_request is None and not self._messages:
        _start(self)  # bytes of a request whose headers are not complete yet


def _connection_lost(self: RequestHandler, exc: BaseException | None) -> None:
    _stop(self)
    _original_lost(self, exc)


def install(header_timeout_s: float) -> None:
    """Time every request's headers in this process (0 turns it off)."""
    _timeout_s[0] = header_timeout_s
    patched: Any = RequestHandler
    patched.connection_made = _connection_made
    patched.data_received = _data_received
    patched.connection_lost = _connection_lost
