"""Optional API-key authentication, as the original Hades does it: HTTP Basic ``hades:<key>``, or ``Bearer <key>``."""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from runtime.errors import Unauthorized

BASIC_USER = "hades"
CHALLENGE = 'Basic realm="Authorization Required"'


def check(request: web.Request, api_key: str) -> None:
    """Raise ``Unauthorized`` unless the request carries the key (no-op when no key is configured)."""
    if not api_key:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and hmac.compare_digest(credentials.strip().encode(), api_key.encode()):
        return
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
        user_ok = hmac.compare_digest(user.encode(), BASIC_USER.encode())
        if hmac.compare_digest(password.encode(), api_key.encode()) and user_ok:
            return
    raise Unauthorized(
        "missing or wrong credentials: use HTTP Basic with user 'hades' and the API key, or 'Bearer <key>'"
        if header
        else "this endpoint needs credentials: HTTP Basic with user 'hades' and the API key, or 'Bearer <key>'"
    )
