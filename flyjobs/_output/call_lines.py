"""Which call printed each line of a machine's output, from the worker's call marks.

A machine that runs more than one call (a batch's or a pool's) marks each call's part of its
output (`flyjobs._wire.log_lines.call_mark`, `call_line`). `CallLines` reads one machine's lines in
order and tells, for each, the call it belongs to: None for the machine's own lines (outside any
call's marks, or on a machine that runs one call, whose metadata names it). Marks are passed on
as such (`Piece.mark`), never as lines to show.

After a gap (the emulator's `flyjobs._wire.log_lines.log_gap_line`: earlier lines were dropped) the
call's start mark may have been dropped too. With ``hold_after_gap`` the lines that follow (the
gap line with them) wait for the next mark to tell: an end mark makes them that call's, a start
mark the machine's own. Without it (live output, where waiting would hold lines back), they
count as the machine's own, which its reader maps to the call it knows the machine runs.

A reader that knows which calls a machine may run (``accepts``: from its metadata, see
`flyjobs._calls.fleet.JobMachine.may_run`) takes a mark naming any other call as a line like any
other: a machine cannot put lines into another machine's calls, whatever it prints.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from .._wire.log_lines import LOG_GAP_PREFIX, parse_call_mark

__all__ = ("CallLines", "Piece", "shown")

#: Lines held after a gap at most; past that they are released as the machine's own.
_MAX_HELD = 100_000
#: A colour (SGR) sequence, kept; or another control character, escaped.
_CONTROL = re.compile(r"\x1b\[[0-9;]*m|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Every control character, newlines, tabs and the escape of a colour too.
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RESET = "\x1b[0m"


def shown(line: str, *, output: bool = True, multiline: bool = False) -> str:
    """Remote or stored text as it is safe to write to a terminal: every command prints such
    text (machines' output, metadata, names, exception messages, keys) through this.

    A machine's output ``line`` (``output=True``, after a ``[call_id]`` prefix): colours kept
    (and reset at its end, so they do not run into the next line); of text overwritten with
    carriage returns (a progress bar), the last part, as a terminal would show it; any other
    control character (cursor moves, screen clears, title changes, bells) written as
    ``\\xNN``, so a line cannot overwrite or hide what came before it.

    Any other text (``output=False``: a name, a metadata value, an exception's message, one
    line of a traceback): every control character written as ``\\xNN``, newlines, tabs,
    carriage returns and colours too, so that it stays one cell of one line; with
    ``multiline`` (a traceback, an error's message and notes) newlines stay, between lines so
    escaped."""
    if multiline:
        return "\n".join(shown(part, output=False) for part in line.split("\n"))
    if not output:
        return _ANY_CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", line)
    if "\r" in line:
        parts = [part for part in line.split("\r") if part]
        line = parts[-1] if parts else ""
    if not _CONTROL.search(line):
        return line
    coloured = False

    def escape(match: re.Match[str]) -> str:
        nonlocal coloured
        if len(match[0]) > 1:
            coloured = True
            return match[0]
        return f"\\x{ord(match[0]):02x}"

    line = _CONTROL.sub(escape, line)
    return line + _RESET if coloured else line


class Piece(NamedTuple):
    """A line of a machine's output and the call it belongs to (None: the machine's own), or,
    with ``mark`` ("start" or "end"), a call's mark (``text`` is then empty), or ("error") the
    exception the call raised (``text``: its JSON, see `flyjobs._wire.log_lines.call_error`)."""

    call: str | None
    text: str
    mark: str = ""


class CallLines:
    """One machine's output, line by line, told apart by call (see the module docstring)."""

    def __init__(
        self, *, hold_after_gap: bool = False, accepts: Callable[[str], bool] | None = None
    ) -> None:
        self.hold_after_gap = hold_after_gap
        #: whether a mark naming this call id is one (None: any is)
        self.accepts = accepts
        #: The call whose marks the last line was between (None: none).
        self.current: str | None = None
        self._held: list[str] | None = None

    def feed(self, line: str) -> list[Piece]:
        """The pieces ``line`` makes: those it releases, if any, then its own (none while held)."""
        mark = parse_call_mark(line)
        if mark is not None and self.accepts is not None and not self.accepts(mark[1]):
            mark = None
        if mark is None:
            if line.startswith(LOG_GAP_PREFIX):
                self.current = None
                if self.hold_after_gap and self._held is None:
                    self._held = []
            if self._held is None:
                return [Piece(self.current, line)]
            self._held.append(line)
            if len(self._held) >= _MAX_HELD:
                return self.flush()
            return []
        kind, call_id, text = mark
        if kind == "line":
            return [Piece(call_id, text)]
        if kind == "error":
            return [Piece(call_id, text, kind)]
        pieces = self._release(call_id if kind == "end" else None)
        self.current = call_id if kind == "start" else None
        pieces.append(Piece(call_id, "", kind))
        return pieces

    def flush(self) -> list[Piece]:
        """Release the lines held after a gap as the machine's own (no mark came to tell)."""
        return self._release(None)

    def _release(self, call: str | None) -> list[Piece]:
        held, self._held = self._held or [], None
        return [Piece(call, text) for text in held]
