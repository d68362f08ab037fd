"""A live reader's view of a job whose later attempt sends its steps' output again (issue 20, finding 4).

The stored log (``GET /logs``, callbacks) shows one attempt, the record's latest: an attempt that adopted a dead
dispatcher's running step reads that step's output again from the engine, from its first line, so attempt 2
carries lines 1 to 4 that a live reader already saw as attempt 1's. ``Replays`` keeps the live stream equal to the
stored one: a line of a later attempt that repeats, at the same place in the same step, a line the reader was
shown is not sent again; the first line that differs (the attempt really ran the step again, with other output)
is preceded by one ``system`` notice saying that the step's lines from here on replace those above. The notice is
sent without an event id (a reconnect resumes after the last real line) and carries the number before that
line's (``2.4`` before ``2.5``), so a client that makes an id from it never skips the line itself.

Lines are compared per step and stream (the engine's log gives stdout and stderr back each in order, but not
their interleaving) by a 64-bit digest of their text, stored in ``array('q')``s (8 bytes a line), at most
``MAX_REMEMBERED_LINES`` per attempt; past that a later attempt's lines are sent as they come.
Hades' own ``system`` lines are not positional (an adopting attempt pulls nothing, a retry has its own notices):
one equal to a ``system`` line already shown for that step is dropped, any other is sent.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field

from runtime.events import LogLine

MAX_REMEMBERED_LINES = 200_000
"""Lines of one attempt whose digests a live reader keeps (1.6 MB); a log longer than that is rarely followed."""


def _digest(line: LogLine) -> int:
    data = line["message"].encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def _step(line: LogLine) -> int:
    step = line.get("step_id")
    return step if isinstance(step, int) else 0


Output = tuple[int, str]
"""A step's stream: ``(step id, "stdout" | "stderr")``."""


@dataclass
class Replays:
    """Decides, line by line in ``(attempt, seq)`` order, what a live reader is sent."""

    attempt: int = -1
    _earlier: dict[Output, array[int]] = field(default_factory=dict)
    """The previous attempt's lines per step and stream: what the reader has been shown as that output."""
    _current: dict[Output, array[int]] = field(default_factory=dict)
    _system_shown: dict[int, set[int]] = field(default_factory=dict)
    _diverged: set[Output] = field(default_factory=set)
    _noticed: set[int] = field(default_factory=set)
    """Steps whose replacement this attempt has announced."""
    _remembered: int = 0

    def admit(self, attempt: int, line: LogLine) -> list[LogLine]:
        """The lines to send for ``line`` of ``attempt``: none (a repeat), the line, or a notice and the line."""
        if attempt != self.attempt:
            if self.attempt >= 0 and any(self._current.values()):
                self._earlier = self._current
            self.attempt, self._current, self._diverged, self._remembered = attempt, {}, set(), 0
            self._noticed = set()
        step = _step(line)
        digest = _digest(line)
        if line.get("stream") == "system":
            shown = self._system_shown.setdefault(step, set())
            if digest in shown:
                return []
            shown.add(digest)
            return [line]
        output = (step, str(line.get("stream", "stdout")))
        lines = self._current.setdefault(output, array("q"))
        position = len(lines)
        if self._remembered < MAX_REMEMBERED_LINES:
            lines.append(digest)
            self._remembered += 1
        earlier = self._earlier.get(output)
        if output in self._diverged or earlier is None or position >= len(earlier):
            return [line]
        if earlier[position] == digest:
            return []  # shown already, as the earlier attempt's line at this place
        self._diverged.add(output)
        if step in self._noticed:
            return [line]
        self._noticed.add(step)
        notice: LogLine = {
            **line,
            "seq": line["seq"] - 1,
            "stream": "system",
            "message": f"[hades] attempt {attempt} ran step {step} again: its lines from here on replace those above",
        }
        return [notice, line]
