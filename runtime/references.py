"""The syntax of what a job names outside itself: container image references and callback URLs.

A job whose image the engine cannot parse, or whose callback URL no client can open, would be accepted and then
fail at run time (or, for a callback, raise at every delivery). Both are checked at submit instead:

- **Images**: the engine's own grammar (distribution/reference, ``reference/regexp.go``, which Docker, containerd
  and the kubelet use): ``[domain[:port]/]path[:tag][@digest]`` with a lower-case path, a tag of at most 128
  characters, a name of at most 255, and a digest whose hex length fits its algorithm.
- **URLs**: ``http``/``https`` with a host that is a DNS name or an IP literal (IPv6 in brackets), a port from 1
  to 65535, and nothing a parser has to guess at.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

NAME_TOTAL_LENGTH_MAX = 255
"""distribution/reference's ``NameTotalLengthMax``: the name (domain and path, no tag) in characters."""

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
"""The algorithms the engine knows, and their hex length (go-digest's ``Validate``)."""
_HEX_NAME = re.compile(r"[a-f0-9]{64}")
_DNS_NAME = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?"
)


def image_problem(image: str) -> str | None:
    """Why the engine would refuse ``image`` as a reference, or None."""
    match = _REFERENCE.fullmatch(image)
    if match is None:
        if image.lower() != image and _REFERENCE.fullmatch(image.lower()):
            return "must be a valid image reference: the repository name must be lower-case"
        return (
            "must be a valid image reference such as alpine:3.20 or registry.example:5000/team/image@sha256:<64 hex> "
            "(lower-case path, tag of at most 128 characters)"
        )
    name, digest = match["name"], match["digest"]
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        return f"must be a valid image reference: the name is longer than {NAME_TOTAL_LENGTH_MAX} characters"
    if _HEX_NAME.fullmatch(name):
        return "must be a valid image reference: a 64-character hexadecimal name is read as an image id"
    if digest is not None:
        algorithm, _, hex_part = digest.partition(":")
        expected = _DIGEST_HEX_LENGTH.get(algorithm)
        if expected is None:
            return f"must be a valid image reference: unsupported digest algorithm {algorithm[:32]!r}"
        if len(hex_part) != expected:
            return f"must be a valid image reference: a {algorithm} digest has {expected} hexadecimal characters"
    return None


def url_problem(url: str) -> str | None:
    """Why ``url`` is not an ``http(s)`` URL a client can open, or None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unclosed "[", a bad IPv6 literal
        return "must be an absolute http:// or https:// URL (it does not parse)"
    try:
        port = parts.port
    except ValueError:  # not a number, or past 65535
        return "must be an absolute http:// or https:// URL with a port from 1 to 65535"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an absolute http:// or https:// URL"
    if port is not None and not 0 < port <= 65535:
        return "must be an absolute http:// or https:// URL with a port from 1 to 65535"
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return "must be an absolute http:// or https:// URL: the host is not a valid IPv6 address"
        return None
    if not _host_name_ok(host):
        return "must be an absolute http:// or https:// URL: the host is not a valid host name or address"
    return None


def _host_name_ok(host: str) -> bool:
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return False
    return len(ascii_host) <= 253 and _DNS_NAME.fullmatch(ascii_host) is not None
