"""Job output on the user's terminal: written by untrusted code (students' submissions), so it may colour its
text and nothing else.

On a terminal, a colour or text attribute (SGR, ``ESC [ … m``) is kept: rich reads it and writes its own. Every
other control character is shown, never sent: in caret notation as ``cat -v`` shows it (ESC ``^[``, BEL ``^G``,
DEL ``^?``, a C1 control such as CSI U+009B ``M-^[``), so a title (OSC), a hyperlink (OSC 8), a cursor move or a
cleared screen (CSI) reads as text and does nothing. Tab and newline are kept; a carriage return ending a line
(CRLF output) is dropped, one inside a line (a progress bar redrawing itself) starts a new line, so every state
stays visible and nothing overwrites what came before. A TTY on which colours are off (``TTY_COMPATIBLE=0``, an
empty ``FORCE_COLOR``) gets the same text without the colours. Only where the output is not a TTY (a pipe, a file)
is the text written exactly as served: a script wants the job's bytes.

Of the SGR attributes, blink (5, 6) and conceal (8) are dropped: a job must not hide text from the reader, nor
make it flash. The bidirectional overrides and isolates (U+202A to U+202E, U+2066 to U+2069) are shown as ``<U+202E>``:
they reorder what follows on the line (a "Trojan Source" line reads differently from what it is), and a label
(a step name, a reason) gets the same treatment.

rich alone does not do this: ``Text`` passes ESC and C1 controls through, and ``Text.from_ansi`` drops CSI
sequences but turns OSC 8 into a real hyperlink, passes C1 controls, keeps a BEL-ended OSC's text and shows only
what follows the last CR.
"""

from __future__ import annotations

import re

from rich.ansi import AnsiDecoder
from rich.console import Console
from rich.text import Text

_LINE_END_CR = re.compile(r"\r+(?=\n|$)")
_MID_LINE_CR = re.compile(r"\r+")
_SGR_OR_CONTROL = re.compile(r"(\x1b\[[0-9;:]*m)|[\x00-\x08\x0b-\x1f\x7f-\x9f]|[\u202a-\u202e\u2066-\u2069]")
"""An SGR sequence (group 1), or one control character other than tab and newline, or a bidi override."""
_HIDING_SGR = frozenset({"5", "6", "8"})
"""Slow blink, rapid blink, conceal: attributes a job's text may not take."""
_EXTENDED_COLOUR = {"38", "48", "58"}
"""SGR parameters followed by a colour (``5;n`` or ``2;r;g;b``), whose numbers are not attributes."""


def _safe_sgr(sgr: str) -> str:
    """The SGR sequence without blink and conceal (colours given as ``38;5;n`` keep their ``5``)."""
    params = sgr[2:-1].split(";")
    kept: list[str] = []
    index = 0
    while index < len(params):
        param = params[index]
        if param in _EXTENDED_COLOUR and index + 1 < len(params):
            width = {"5": 2, "2": 4}.get(params[index + 1], 1)
            kept.extend(params[index : index + 1 + width])
            index += 1 + width
            continue
        if param.lstrip("0") not in _HIDING_SGR or param in ("", "0"):
            kept.append(param)
        index += 1
    if not kept:
        return ""
    return "\x1b[" + ";".join(kept) + "m"


def caret(char: str) -> str:
    """A control character as ``cat -v`` shows it: ``^[`` for ESC, ``^?`` for DEL, ``M-^[`` for U+009B."""
    code = ord(char)
    if code >= 0x80:
        return "M-" + caret(chr(code - 0x80))
    return "^?" if code == 0x7F else "^" + chr(code + 0x40)


def visible_controls(text: str, *, keep_colours: bool = True) -> str:
    """``text`` with every control character but tab and newline in caret notation; SGR kept when asked."""

    def replace(match: re.Match[str]) -> str:
        sgr = match.group(1)
        if sgr is None:
            char = match.group(0)
            return f"<U+{ord(char):04X}>" if ord(char) > 0x9F else caret(char)
        return _safe_sgr(sgr) if keep_colours else "^[" + sgr[1:]

    return _SGR_OR_CONTROL.sub(replace, text)


def label(text: str) -> str:
    """A name or reason from a job record, for display: no control character, no colour of its own."""
    return visible_controls(text, keep_colours=False)


CHUNK_LINES = 1000
"""Lines rendered at a time: a long log starts showing at once (rich renders some 50,000 lines a second)."""


_SGR = re.compile(r"\x1b\[[0-9;:]*m")


def for_terminal(text: str, *, colours: bool = True) -> str:
    """``text`` as it may reach a terminal: carriage returns resolved into lines, no lone surrogate (which no
    terminal encoding can write), every control character but tab and newline made visible; SGR kept (or, without
    ``colours``, removed)."""
    text = _MID_LINE_CR.sub("\n", _LINE_END_CR.sub("", text)).encode("utf-8", "replace").decode("utf-8")
    return visible_controls(text) if colours else visible_controls(_SGR.sub("", text), keep_colours=False)


def _is_tty(console: Console) -> bool:
    try:
        return console.file.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed file
        return False


def write_job_output(console: Console, text: str, *, style: str = "", decoder: AnsiDecoder | None = None) -> None:
    """Write ``text`` (lines with their newlines) safely on a terminal; as it is anywhere else.

    On a terminal the job's colours become rich styles over ``style`` (rich writes its own SGR codes and resets
    them at the end), any other escape is plain text, and a tab is laid out in spaces as the terminal would.
    ``decoder``: one kept by the caller across calls (a line at a time), so a colour lasts until it is reset, as
    it does on the terminal and in ``hades logs``.
    """
    if console.is_terminal:
        decoder = decoder or AnsiDecoder()  # one for all lines: a colour lasts until reset, as on the terminal
        lines = for_terminal(text).split("\n")
        for start in range(0, len(lines), CHUNK_LINES):
            chunk = Text("\n", style=style).join(
                decoder.decode_line(line) for line in lines[start : start + CHUNK_LINES]
            )
            console.print(chunk, end="" if start + CHUNK_LINES >= len(lines) else "\n")
        return
    if _is_tty(console):  # a terminal with colours turned off: still never the job's raw bytes
        console.file.write(for_terminal(text, colours=False))
        console.file.flush()
        return
    file = console.file
    file.flush()
    binary = getattr(file, "buffer", None)  # bytes, whatever the locale's encoding
    if binary is None:
        file.write(text)
        file.flush()
        return
    binary.write(text.encode("utf-8", errors="replace"))
    binary.flush()
