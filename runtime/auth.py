"""Optional API-key authentication, as the original Hades does it: HTTP Basic ``hades:<key>``, or ``Bearer <key>``.

Besides the one key (``HADES_API_KEY``), submit takes tenant keys (``HADES_SUBMIT_API_KEYS_FILE``): each names the
tenant its jobs belong to (``submitter``). Every key is compared in constant time, all of them each time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

from aiohttp import web

from runtime.errors import Unauthorized

BASIC_USER = "hades"
CHALLENGE = 'Basic realm="Authorization Required"'


def _presented(request: web.Request) -> tuple[str, str] | None:
    """The (user, key) the request carries: Bearer (user ``hades``) or Basic; None when none or unreadable."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return BASIC_USER, credentials.strip()
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password
    return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _refusal(request: web.Request) -> Unauthorized:
    return Unauthorized(
        "missing or wrong credentials: use HTTP Basic with user 'hades' and the API key, or 'Bearer <key>'"
        if request.headers.get("Authorization")
        else "this endpoint needs credentials: HTTP Basic with user 'hades' and the API key, or 'Bearer <key>'"
    )


def check(request: web.Request, api_key: str) -> None:
    """Raise ``Unauthorized`` unless the request carries the key (no-op when no key is configured)."""
    if not api_key:
        return
    presented = _presented(request)
    if presented is not None:
        user, key = presented
        user_ok = _same(user, BASIC_USER)
        if _same(key, api_key) and user_ok:
            return
    raise _refusal(request)


def submitter(request: web.Request, api_key: str, tenant_keys: Sequence[tuple[str, str]]) -> str | None:
    """The tenant a submit's key names, None for the one key (or when no key is configured); else ``Unauthorized``.

    A tenant key is taken as ``Bearer <key>`` or Basic with user ``hades`` or the tenant's name."""
    if not tenant_keys:
        check(request, api_key)
        return None
    presented = _presented(request)
    if presented is None:
        raise _refusal(request)
    user, key = presented
    found: str | None = None
    for tenant, tenant_key in tenant_keys:  # no early exit: the time taken does not tell which key matched
        if _same(key, tenant_key) and (_same(user, BASIC_USER) or _same(user, tenant)):
            found = tenant
    if found is not None:
        return found
    check(request, api_key)
    return None
