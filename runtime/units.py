"""Memory sizes: one meaning on every executor.

``512M`` is 512 MiB and ``2G`` is 2 GiB (binary, as Docker reads them); lower-case units and Kubernetes-style
``Mi``/``Gi`` mean the same. A bare number is bytes. Kubernetes gets the exact byte count back as ``…Mi``/``…Gi``
where it divides evenly, so no executor ever misreads ``m`` as milli.
"""

from __future__ import annotations

import re

_MEMORY = re.compile(r"^([1-9][0-9]{0,15})([KMGT]i?)?$", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

MEMORY_PATTERN = r"^[1-9][0-9]{0,15}([KMGTkmgt][iI]?)?$"
"""The same rule for the JSON Schema (kept equal to the regex above by a test)."""


def parse_memory(text: str) -> int | None:
    """Bytes for a memory string, or None when it is not one."""
    match = _MEMORY.match(text.strip())
    if not match:
        return None
    number, unit = match.groups()
    return int(number) * _FACTORS[(unit or "")[:1].upper()]


def to_kubernetes_quantity(size_bytes: int) -> str:
    """``536870912`` → ``512Mi``: the largest binary unit that divides the size exactly."""
    for suffix, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size_bytes % factor == 0:
            return f"{size_bytes // factor}{suffix}"
    return str(size_bytes)


def format_memory(size_bytes: int) -> str:
    """Bytes back to the short form users write (``512M``, ``2G``)."""
    for suffix, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size_bytes % factor == 0:
            return f"{size_bytes // factor}{suffix}"
    return str(size_bytes)
