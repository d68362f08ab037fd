"""The one place where NATS failures become ``Unavailable``.

Every call into nats-py inside the messaging door runs under ``translated``; callers outside the door only ever
see ``Unavailable`` (retry later: 503 at the edge, nak in dispatch) or a result, never a NATS exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import nats.errors
import nats.js.errors

from runtime.errors import Unavailable, truncate

NATS_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, nats.errors.Error)
"""What a NATS call may raise when the broker is down, slow, or refuses (``nats.js.errors.Error`` included)."""


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Run a NATS call; any NATS failure leaves as ``Unavailable`` saying what could not be done and why."""
    try:
        yield
    except nats.js.errors.APIError as exc:
        raise Unavailable(f"{action}: the message broker refused ({truncate(str(exc))})") from exc
    except NATS_ERRORS as exc:
        raise Unavailable(f"{action}: the message broker is not reachable ({type(exc).__name__})") from exc
