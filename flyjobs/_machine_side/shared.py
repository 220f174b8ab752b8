"""What the calls of one worker process share, made safe for calls that run at once (a warm
pool machine's slots, see `flyjobs.worker`): the output streams, which keep each call's tail;
the deadline thread; the event loop of async functions.

Imported by the worker runtime: standard library (its C cores) only, and cheap to import.
"""

from __future__ import annotations

import _thread
import faulthandler
import os
import sys
import time
from _contextvars import ContextVar

from flyjobs._wire.log_lines import CALL_MARK_PREFIX, LOG_GAP_PREFIX, RUN_RECORD_PREFIX, call_line
from flyjobs._wire.machine import EXIT_DEADLINE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

__all__ = ("SLOT", "Deadlines", "EventLoop", "Tail", "capture_output", "log")

#: Seconds past the deadline after which a function stuck in C code (so that not even the
#: deadline thread gets to run) is stopped by faulthandler's watchdog, with exit code 1.
_HARD_STOP_GRACE_S = 5.0


def log(message: str) -> None:
    """One line to the machine's own stderr (never into the captured tail)."""
    stream = sys.__stderr__
    if stream is not None:
        stream.write(f"flyjobs.worker: {message}\n")
        stream.flush()


#: How the lines that readers of a machine's output take as the worker's own begin.
_WORKER_PREFIXES = (CALL_MARK_PREFIX, RUN_RECORD_PREFIX, LOG_GAP_PREFIX)

#: The slot (see `flyjobs.worker._Worker`) whose call runs in this thread or asyncio task: what
#: it writes goes to that call's output tail. Unset in threads a function started itself.
SLOT: ContextVar[int] = ContextVar("flyjobs_worker_slot")


class _Kept:
    """The last `limit` characters written for one call (written from any thread)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[str] = []
        self._size = 0
        self._lock = _thread.allocate_lock()

    def add(self, text: str) -> None:
        with self._lock:
            self._chunks.append(text)
            self._size += len(text)
            if self._size > 2 * self._limit:
                self._chunks = ["".join(self._chunks)[-self._limit :]]
                self._size = len(self._chunks[0])

    def text(self) -> str:
        with self._lock:
            return "".join(self._chunks)[-self._limit :]


class Tail:
    """A text stream that writes through to `stream` and keeps the last `limit` characters of
    each slot's current call.

    What a call's own thread (or asyncio task) writes is that call's alone; what other threads
    write (threads a function started, which cannot be told apart) goes to every slot's tail,
    so with one slot a call's tail has all of its output. With `prefixed` (slots run at the
    same time), a call's lines go through whole, each as `flyjobs._wire.log_lines.call_line`.

    A line a call prints that would read as the worker's own (a call mark, a scheduled run's
    record, or the emulator's line saying it dropped lines) goes through as the call's line
    (`call_line`) too: a call that prints what it was given cannot pass its lines off as
    another call's, end its own output early in ``flyjobs logs`` and the caller's live
    output, or add runs to ``flyjobs schedule ls``. Only lines written
    through ``sys.stdout``/``sys.stderr`` are seen: what a subprocess writes to the
    inherited descriptor, or a write that cuts such a line's start in two, goes through as is.
    """

    def __init__(self, stream: TextIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._kept: dict[int, _Kept] = {}
        self._mid_line = False
        self.prefixed = False
        #: each slot's call id and, with `prefixed`, the line it has begun
        self._lines: dict[int, tuple[str, str]] = {}

    def write(self, text: str) -> int:
        slot = SLOT.get(-1)
        kept = self._kept.get(slot)
        if self.prefixed and kept is not None:
            call_id, begun = self._lines[slot]
            *lines, rest = (begun + text).split("\n")
            self._lines[slot] = (call_id, rest)
            if lines:
                self._write_lines([call_line(call_id, line) for line in lines])
            written = len(text)
        else:
            written = len(text)
            if any(prefix in text for prefix in _WORKER_PREFIXES):
                self._stream.write(self._escaped(text, slot))
            else:
                self._stream.write(text)
            if text:
                self._mid_line = not text.endswith("\n")
        for each in [kept] if kept is not None else list(self._kept.values()):
            each.add(text)
        return written

    def _escaped(self, text: str, slot: int) -> str:
        """``text`` with each line that starts like a mark written as a line of the call that
        ``slot`` runs (any running call's, for a thread the function started)."""
        entry = self._lines.get(slot) or next(iter(self._lines.values()), None)
        if entry is None:
            return text  # no call has started: the worker's own lines
        parts = text.split("\n")
        for i, part in enumerate(parts):
            if (i or not self._mid_line) and part.startswith(_WORKER_PREFIXES):
                parts[i] = call_line(entry[0], part)
        return "\n".join(parts)

    def start(self, slot: int, call_id: str) -> None:
        """Keep a fresh tail for `slot`, whose call `call_id` starts."""
        self._kept[slot] = _Kept(self._limit)
        self._lines[slot] = (call_id, "")

    def finish(self, slot: int) -> None:
        """`slot`'s call has ended: write the line it left unfinished, if prefixed."""
        call_id, begun = self._lines.get(slot, ("", ""))
        if self.prefixed and begun:
            self._lines[slot] = (call_id, "")
            self._write_lines([call_line(call_id, begun)])

    def text(self, slot: int) -> str:
        kept = self._kept.get(slot)
        return "" if kept is None else kept.text()

    def end_line(self) -> None:
        """End a line left unfinished, so that what is written next starts a line of its own."""
        if self._mid_line:
            self._stream.write("\n")
            self._mid_line = False
        self._stream.flush()

    def write_line(self, line: str) -> None:
        """Write ``line`` through on a line of its own, outside the kept tails."""
        self._write_lines([line])

    def _write_lines(self, lines: list[str]) -> None:
        self.end_line()
        # One write: lines of slots that write at once do not cut into each other.
        self._stream.write("".join(line + "\n" for line in lines))
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        # flush, fileno, isatty, encoding, buffer, ...: those of the real stream.
        return getattr(self._stream, name)


class Deadlines:
    """Ends the process with EXIT_DEADLINE once every slot still running is past its deadline
    (unix s); with one slot, once its deadline has passed.

    A slot's deadline is its call's, then the end of its wait for the next call (it stays armed
    through delivery too, so that a machine never outlives its deadline); a slot that has ended
    has none. A call that runs past its deadline while other slots run goes on (a thread cannot
    be stopped) but delivers nothing, and holds the process up no longer than they do. A thread
    rather than SIGALRM: the function may use ``signal.alarm`` itself and would silently replace
    the handler. Code that holds the GIL in C for long starves the thread (as it would a signal
    handler); faulthandler's C watchdog ends such a process a little after the last deadline.
    """

    def __init__(self) -> None:
        self._at: dict[int, tuple[float, str]] = {}
        self._started = False

    def set(self, slot: int, at: float, fn_ref: str) -> None:
        self._at[slot] = (at, fn_ref)
        if not self._started:
            self._started = True
            _thread.start_new_thread(self._watch, ())
        stderr = sys.__stderr__
        if stderr is not None:
            latest = max(at for at, _ in list(self._at.values()))
            faulthandler.dump_traceback_later(
                max(latest - time.time(), 0.0) + _HARD_STOP_GRACE_S, exit=True, file=stderr
            )

    def clear(self, slot: int) -> None:
        """`slot` has ended: it holds the process up no longer."""
        self._at.pop(slot, None)

    def _watch(self) -> None:
        while True:
            running = list(self._at.values())
            remaining_s = max((at for at, _ in running), default=0.0) - time.time()
            if running and remaining_s <= 0:
                break
            # Woken at least once a second: a later input may have moved a deadline.
            time.sleep(min(remaining_s, 1.0) if running else 1.0)
        # No flush of the output streams: they are line buffered (see _capture_output), and
        # flushing could block on a lock the stuck main thread holds.
        fn_refs = ", ".join(sorted({fn_ref for _, fn_ref in running}))
        log(f"deadline passed while running {fn_refs}; exiting {EXIT_DEADLINE}")
        os._exit(EXIT_DEADLINE)


def capture_output(limit: int) -> tuple[Tail, Tail]:
    """Put a `Tail` keeping `limit` characters per call in place of sys.stdout and sys.stderr."""
    streams = []
    for name in ("stdout", "stderr"):
        real = getattr(sys, name)
        reconfigure = getattr(real, "reconfigure", None)
        if reconfigure is not None:
            # So that the machine's log gets each line as it is printed.
            reconfigure(line_buffering=True)
        tail = Tail(real, limit)
        setattr(sys, name, tail)
        streams.append(tail)
    return streams[0], streams[1]


class EventLoop:
    """The one event loop of the machine's async functions, in a thread of its own (started
    with the first coroutine). Async calls that run at once share it, as in any asyncio
    program, and module state bound to a loop (clients, connection pools) stays usable from
    one call to the next."""

    def __init__(self) -> None:
        self._loop: Any = None
        self._lock = _thread.allocate_lock()

    def run(self, coroutine: Any) -> Any:
        """Run `coroutine` on the loop; return its value or raise its exception, here."""
        import asyncio  # lazy: keeps machines light

        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                _thread.start_new_thread(self._serve, (self._loop,))
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @staticmethod
    def _serve(loop: Any) -> None:
        while True:
            try:
                loop.run_forever()
            except BaseException:
                # KeyboardInterrupt or SystemExit from a coroutine leave run_forever after the
                # task has taken them as its outcome: the loop goes on serving the others.
                continue
