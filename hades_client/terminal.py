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
_SGR_OR_CONTROL = re.compile(r"(\x1b\[[0-9;:]*m)|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""An SGR sequence (group 1), or one control character other than tab and newline."""


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
            return caret(match.group(0))
        return sgr if keep_colours else "^[" + sgr[1:]

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
