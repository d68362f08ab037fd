"""Which files under /shared a job asked for: its ``artifacts`` and ``reports.junit`` globs, relative to /shared.

``*`` and ``?`` match within one name, ``[...]`` one character of a set, ``**`` any number of directories (also
none). ``static_prefix`` is the literal directory part before the first wildcard: only that part of the volume has
to be read, so ``target/*.jar`` never reads a Maven repository cached elsewhere in /shared.
"""

from __future__ import annotations

import posixpath
import re
from functools import cache

_WILD = re.compile(r"[*?\[]")


@cache
def _compiled(glob: str) -> re.Pattern[str]:
    parts: list[str] = []
    segments = glob.strip("/").split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append("(?:.*/)?" if not last else ".*")
            continue
        body = _name_pattern(segment)
        parts.append(body + ("" if last else "/"))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def _name_pattern(segment: str) -> str:
    """One name's wildcards as a regular expression that never crosses a ``/``."""
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and segment.find("]", index + 2) != -1:
            end = segment.find("]", index + 2)
            inner = segment[index + 1 : end]
            negate = inner.startswith("!")
            inner = re.escape(inner[1:] if negate else inner).replace("\\-", "-")
            out.append(f"[{'^/' if negate else ''}{inner}]")
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def matches(glob: str, path: str) -> bool:
    """Whether ``path`` (relative to /shared, no leading /) is one of the files ``glob`` names."""
    return _compiled(glob).match(path) is not None


def static_prefix(glob: str) -> str:
    """The literal part of ``glob`` before its first wildcard ('' for all of /shared)."""
    segments = glob.strip("/").split("/")
    literal: list[str] = []
    for segment in segments:
        if segment == "**" or _WILD.search(segment):
            break
        literal.append(segment)
    return "/".join(literal)


def covering_prefixes(globs: list[str]) -> list[str]:
    """The fewest prefixes that cover every glob: one read of ``target`` serves ``target/*.jar`` and
    ``target/surefire-reports/*.xml`` both."""
    prefixes = sorted({static_prefix(g) for g in globs}, key=lambda p: (p.count("/"), p))
    kept: list[str] = []
    for prefix in prefixes:
        if not any(k == "" or prefix == k or prefix.startswith(k + "/") for k in kept):
            kept.append(prefix)
    return kept


def under_shared(parent: str, member: str) -> str | None:
    """A tar member's path relative to /shared (its archive's members are relative to ``parent``, an absolute
    directory), or None when it would lie outside /shared."""
    full = posixpath.normpath(posixpath.join(parent, member))
    if not full.startswith("/shared/") or "\x00" in full:
        return None
    return full.removeprefix("/shared/")
