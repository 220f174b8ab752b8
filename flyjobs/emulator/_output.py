"""A machine's output as the emulator captured it: numbered, timestamped lines, in memory.

A machine's stdout and stderr are one pipe that only the emulator reads (`ProcessHandle`), so a
machine can print what it likes into its own output, as on Fly, but can neither reach another
machine's nor stamp a line with a time or a number. The emulator's own messages about a machine
(a launch that failed) go in the same way.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from .._wire.log_lines import log_gap_line

__all__ = ("LogLine", "MachineOutput")

#: Bytes of one line at most; a longer one is cut into several (Fly splits long lines too).
_MAX_LINE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line: its number in the machine's output (from 0), Unix time in ms, and text."""

    seq: int
    at_ms: int
    text: str


@dataclass(eq=False, slots=True)
class MachineOutput:
    """The last ``max_bytes`` of a machine's output, as complete lines.

    :ivar max_bytes: bytes of text kept; older lines are dropped first, as Fly's logs keep a
        recent window (and `read` says where).
    """

    max_bytes: int
    _lines: deque[LogLine] = field(default_factory=deque)
    _size: int = 0
    _next_seq: int = 0
    _partial: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        """Add bytes read from the machine; complete lines are recorded, the rest waits."""
        self._partial += data
        while True:
            end = self._partial.find(b"\n")
            if end < 0:
                if len(self._partial) >= _MAX_LINE_BYTES:
                    self._record(bytes(self._partial[:_MAX_LINE_BYTES]))
                    del self._partial[:_MAX_LINE_BYTES]
                    continue
                return
            chunk = bytes(self._partial[:end])
            del self._partial[: end + 1]
            for start in range(0, max(len(chunk), 1), _MAX_LINE_BYTES):
                self._record(chunk[start : start + _MAX_LINE_BYTES])

    def flush(self) -> None:
        """Record what is left of an unfinished last line (the process has ended)."""
        if self._partial:
            self._record(bytes(self._partial))
            self._partial.clear()

    def note(self, text: str) -> None:
        """Add a line of the emulator's own (``Error: …``)."""
        self.flush()
        for line in text.splitlines() or [""]:
            self._record(line.encode())

    @property
    def next_seq(self) -> int:
        """The number the next line will have: lines so far, dropped ones included."""
        return self._next_seq

    def read(self, after: int | None, limit: int) -> tuple[list[LogLine], int]:
        """At most ``limit`` lines numbered ``after`` or later (None: from the first), and the
        number to continue from.

        Where lines from ``after`` on were dropped already, the first line returned says how
        many (`log_gap_line`, numbered as the last line dropped): a reader never misses lines
        without being told.
        """
        start = self._next_seq - len(self._lines)
        first = max(after or 0, start)
        lines: list[LogLine] = []
        if first > (after or 0) and limit > 0:
            at_ms = self._lines[0].at_ms if self._lines else time.time_ns() // 1_000_000
            gap = log_gap_line(first - (after or 0), self.max_bytes)
            lines.append(LogLine(first - 1, at_ms, gap))
        count = max(0, min(limit - len(lines), self._next_seq - first))
        lines.extend(itertools.islice(self._lines, first - start, first - start + count))
        return lines, first + count

    def _record(self, raw: bytes) -> None:
        text = raw.rstrip(b"\r").decode(errors="replace")
        self._lines.append(LogLine(self._next_seq, time.time_ns() // 1_000_000, text))
        self._next_seq += 1
        self._size += len(text)
        while self._size > self.max_bytes and len(self._lines) > 1:
            self._size -= len(self._lines.popleft().text)
