"""Which addresses a submitter's names may make Hades reach: step images' registries and callback targets.

Both are names a job document controls, but the connection is made by someone trusted: the Docker daemon (or the
kubelet) pulls an image, the logs function posts a callback. Left alone, either reaches loopback, the services
themselves, the cloud metadata address (169.254.169.254) or the private network (issue 13, findings 1 and 11).

- **Addresses**: ``internal_address`` is anything not globally routable (loopback, link-local, private, shared,
  unspecified, documentation, multicast ranges), IPv4-mapped IPv6 included.
- **Images**: ``image_refusal`` refuses an image whose registry host is an internal IP literal (shorthand IPv4
  such as ``127.1`` too) or a ``localhost`` name, unless it matches one of the operator's patterns
  (``HADES_ALLOWED_IMAGES``); with patterns set, only matching images are allowed. ``registry_refusal`` adds the
  registry *name*: resolved (at submit and again at dispatch, before the pull), it is refused when any address is
  internal, as a callback host is (issue 20, finding 2). The daemon resolves the name once more when it pulls, so
  a name whose answer changes in between (DNS rebinding) still gets through: an operator who needs that guarantee
  lists the registries it trusts. A name that does not resolve here is left to the pull, which then fails.
- **Callbacks**: ``GuardedResolver`` resolves a host, checks every address and hands the connector only checked
  ones, so the connection goes to the address that was checked (no second lookup to rebind);
  ``host_refusal`` checks IP literals, which aiohttp connects to without a lookup.
  ``HADES_CALLBACK_ALLOWED_NETWORKS`` (CIDRs) opens internal ranges on purpose.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")
DEFAULT_REGISTRY = "docker.io"
RESOLVE_TIMEOUT_S = 2.0
"""Longest a registry name's look-up may hold a submission; one that takes longer is left to the pull."""

Resolve = Callable[[str], Awaitable[Sequence["Address"]]]
"""Looks a host name up: every address it has, none when it does not resolve (tests pass their own)."""


class AddressRefused(OSError):
    """A host resolved to (or is) an address the policy refuses; an OSError so aiohttp passes it through."""


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDRs (``10.0.0.0/8``, ``::1/128``, a bare address); ``ValueError`` names the bad one."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs if cidr.strip())


def internal_address(address: Address) -> bool:
    """True for every address that is not globally routable: loopback, link-local, private and the like."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def literal_address(host: str) -> Address | None:
    """The address ``host`` spells, if it is an IP literal: ``[::1]``, ``fe80::1%eth0``, ``10.0.0.1``, ``127.1``."""
    text = host.strip().strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    # What inet_aton takes (and a resolver may too): 127.1, 0x7f.1, 2130706433.
    if _NUMERIC_HOST.match(text) and any(c.isdigit() for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def local_name(host: str) -> bool:
    name = host.strip().rstrip(".").lower()
    return name in LOCAL_NAMES or name.endswith(".localhost")


def refused_address(address: Address, allowed: Sequence[Network]) -> bool:
    """An internal address outside the operator's allowed networks."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return internal_address(address) and not any(address in network for network in allowed)


def host_refusal(host: str, allowed: Sequence[Network]) -> str | None:
    """Why a connection to the IP literal ``host`` is refused, or None (names are checked by ``GuardedResolver``)."""
    address = literal_address(host)
    if address is not None and refused_address(address, allowed):
        return f"{address} is a loopback, link-local or private address"
    return None


class GuardedResolver(AbstractResolver):
    """Resolves with the default resolver and refuses the host when any of its addresses is refused.

    Every address is checked, not only the first: a name with one public and one private address would otherwise
    let the connector fall back to the private one.
    """

    def __init__(self, allowed: Sequence[Network] = ()) -> None:
        self._allowed = tuple(allowed)
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            address = literal_address(result["host"])
            if address is None or refused_address(address, self._allowed):
                raise AddressRefused(f"{host} resolves to a loopback, link-local or private address")
        return results

    async def close(self) -> None:
        await self._resolver.close()


def registry_host(image: str) -> str | None:
    """The registry host (with its port) an image reference names, or None for the default registry.

    Docker's rule: the first path component is a registry when it has a ``.`` or ``:``, is ``localhost``, or has
    an upper-case letter (repository names cannot).
    """
    name = image.split("@", 1)[0]
    first, slash, _ = name.partition("/")
    if not slash:
        return None
    if "." in first or ":" in first or first == "localhost" or first.lower() != first:
        return first
    return None


def _host_of(registry: str) -> str:
    if registry.startswith("["):
        return registry[1 : registry.find("]")] if "]" in registry else registry
    host, colon, port = registry.rpartition(":")
    return host if colon and port.isdigit() else registry


def canonical_image(image: str) -> str:
    """The image with its registry spelled out: ``alpine:3`` → ``docker.io/library/alpine:3``."""
    if registry_host(image) is not None:
        return image
    return f"{DEFAULT_REGISTRY}/{image}" if "/" in image.split("@", 1)[0] else f"{DEFAULT_REGISTRY}/library/{image}"


def image_refusal(image: str, allowed_patterns: Sequence[str]) -> str | None:
    """Why a step image must not be pulled, or None.

    With patterns set, an image must match one (as written or with its registry spelled out); a match also opens
    an internal registry, on purpose. Without patterns, any image whose registry host is not internal.
    """
    if allowed_patterns:
        forms = (image, canonical_image(image))
        if any(fnmatch.fnmatchcase(form, pattern) for pattern in allowed_patterns for form in forms):
            return None
        return "is not allowed here: it matches none of the operator's image patterns (HADES_ALLOWED_IMAGES)"
    registry = registry_host(image)
    if registry is None:
        return None
    host = _host_of(registry)
    address = literal_address(host)
    if (address is not None and internal_address(address)) or local_name(host):
        return (
            f"names a registry on a loopback, link-local or private address ({registry}); "
            "an operator can allow it with HADES_ALLOWED_IMAGES"
        )
    return None


async def resolve_addresses(host: str) -> list[Address]:
    """Every address ``host`` resolves to (the system resolver, as the engine uses); none on failure or timeout."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return []
    return [address for info in infos if (address := literal_address(str(info[4][0]))) is not None]


async def registry_refusal(
    image: str, allowed_patterns: Sequence[str], *, resolve: Resolve = resolve_addresses
) -> str | None:
    """``image_refusal``, and with no patterns set, the registry name resolved: refused when any address is internal."""
    refusal = image_refusal(image, allowed_patterns)
    if refusal is not None or allowed_patterns:
        return refusal
    registry = registry_host(image)
    if registry is None:
        return None  # the default registry
    host = _host_of(registry)
    if literal_address(host) is not None:
        return None  # an address literal: image_refusal decided
    if any(internal_address(address) for address in await resolve(host.lower().rstrip("."))):
        return (
            f"names a registry that resolves to a loopback, link-local or private address ({registry}); "
            "an operator can allow it with HADES_ALLOWED_IMAGES"
        )
    return None
