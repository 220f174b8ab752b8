"""Where a batch's inputs come from and where their outcomes go.

`WorkSource` is the client side of a batch's pull protocol: the batch's machines `take` their next
input from it, give an input back for a retry, and report it `finished`. It reads the caller's
iterable lazily, encoding each input as it is taken, and never runs more than ``window`` inputs
ahead of what the caller has consumed, nor hands out another input while the results waiting for the
caller hold `MAX_HELD_BYTES` or more, so client memory stays bounded whatever the number of inputs
and the size of their results.

`Outcomes` carries each input's `Outcome` (its value or error, attempts and timings) from the
runtime's loop to the caller's thread, in input order or as they complete.

Both live on the runtime's event loop, except the `Outcomes` consumer side and
`WorkSource.consumed`, which the caller's thread uses.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from .._cost.ledger import Share
from .._exceptions import SerializationError

__all__ = ("MAX_HELD_BYTES", "MISSING", "Item", "Outcome", "Outcomes", "Recorder", "WorkSource")

Input = tuple[tuple[Any, ...], Mapping[str, Any]]

T = TypeVar("T")

#: What `Recorder.lookup` returns for an input it has no value for.
MISSING: Any = object()


class Recorder(Protocol):
    """What a resumable batch asks of its journal: the value of every input that returned,
    named by the input's encoded arguments (`flyjobs._batches.resume.Resume`, over a
    `flyjobs._batches.journal.Journal`, which stores encoded values by key)."""

    def lookup(self, arguments: bytes) -> Any:
        """The value recorded for an input, or `MISSING` (called from a worker thread)."""

    def record(self, arguments: bytes, value: Any) -> None:
        """Record an input's value (called from a worker thread; the input's machine gets no
        more work until it returns, so a kill loses only the inputs machines were running)."""

    def spent_usd(self) -> float:
        """USD the batch's earlier runs spent (called before the batch starts)."""

    def add_spent(self, usd: float) -> None:
        """Add what this run spent (called from a worker thread as the batch ends)."""

    def close(self) -> None:
        """Release the journal behind it."""


#: Bytes of delivered results waiting for the caller above which a batch reads no more inputs
#: (the window alone would let 256 results of up to 64 MiB each pile up).
MAX_HELD_BYTES = 256 * 1024 * 1024
#: Seconds the caller's thread waits for outcomes at a time.
_WAIT_SLICE_S = 0.25
#: Most inputs read from the iterable in one go (one worker-thread hop).
_CHUNK = 64
#: Seconds after which a read stops early, and between hand-outs of what a read still going
#: has read (a slow or blocking iterable still feeds machines promptly).
_CHUNK_S = 0.05


@dataclass(slots=True)
class Item:
    """One input of a batch.

    :ivar index: its position in the caller's iterable.
    :ivar arguments: its encoded ``(args, kwargs)``.
    :ivar attempts: how many times it has been handed to a machine.
    :ivar queued_at: unix time (s) it was taken from the iterable.
    :ivar shares: each attempt's part of its machine's cost.
    """

    index: int
    arguments: bytes
    attempts: int = 0
    queued_at: float = field(default_factory=time.time)
    shares: list[Share] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """How one input of a ``fn.map`` ended (see ``MapResults.outcomes``).

    :ivar index: the input's position in the iterable.
    :ivar ok: True when the function returned; False when the input failed.
    :ivar value: the function's value, or (not ``ok``) the exception.
    :ivar attempts: machines the input was handed to: 1, more when it was retried, 0 when it
        never reached one (it could not be encoded, or a resumed batch had its value).
    :ivar call_id: its last attempt's call id (``flyjobs logs CALL_ID``), None with no attempt.
    :ivar timings: seconds its last attempt spent in each phase it went through: ``queued``
        (read, until handed to a machine), ``create`` (the machine's create; first input of a
        machine only), ``boot`` (machine created, until the function started; likewise),
        ``run`` (the function), ``deliver`` (function end, until the result was here).
    :ivar shares: what each attempt cost, as parts of their machines' bills (see `cost_usd`).
    """

    __module__ = "flyjobs"

    index: int
    ok: bool
    value: T | Exception
    attempts: int = 0
    call_id: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    shares: tuple[Share, ...] = field(default=(), repr=False, compare=False)

    @property
    def cost_usd(self) -> float:
        """USD the input's attempts cost (failed ones too): each attempt's part of its
        machine's bill, boot and idle included, by the seconds it held the machine, so the
        inputs of a batch add up to its `Summary.cost_usd`. Final once its machines are
        billed from their events (``summary()`` after the map has ended waits for that); an
        estimate from this process's clock before. 0.0 when it reached no machine in this
        run."""
        return sum(share.usd for share in self.shares)


class Outcomes:
    """Each input's `Outcome`, from the loop (`put`) to the caller (`take`). Thread-safe."""

    def __init__(self, *, ordered: bool) -> None:
        self._ordered = ordered
        self._cond = threading.Condition()
        self._ready: dict[int, Outcome[Any]] = {}
        self._completed: collections.deque[Outcome[Any]] = collections.deque()
        self._waiting = 0
        self._next = 0
        self._given = 0
        self._total: int | None = None
        self._final_error: BaseException | None = None
        self._abort: BaseException | None = None
        self._sizes: dict[int, int] = {}
        #: bytes of the results (as delivered) recorded and not yet taken by the caller
        self.held_bytes = 0

    def put(self, outcome: Outcome[Any], size: int = 0) -> None:
        """Record an input's outcome; ``size`` is its result's size as delivered (bytes)."""
        with self._cond:
            if size:
                self._sizes[outcome.index] = size
                self.held_bytes += size
            if self._ordered:
                self._ready[outcome.index] = outcome
                # Out of order: the caller cannot take it yet, so it is not woken for it.
                takeable = outcome.index == self._next
            else:
                self._completed.append(outcome)
                takeable = True
            # Waking the caller's thread costs both threads a GIL hand-over: only when it waits.
            if takeable and self._waiting:
                self._cond.notify_all()

    def end(self, total: int, error: BaseException | None = None) -> None:
        """There are ``total`` inputs; ``error`` (the iterable's own) follows the last."""
        with self._cond:
            self._total, self._final_error = total, error
            self._cond.notify_all()

    def abort(self, error: BaseException) -> None:
        """Stop the caller at once with ``error`` (outcomes not yet taken are dropped)."""
        with self._cond:
            if self._abort is None:
                self._abort = error
            self._cond.notify_all()

    def take(self, timeout_s: float | None = None) -> list[Outcome[Any]]:
        """Wait for the next outcomes (all that are ready, in yield order) and return them; an
        empty list means every outcome has been taken (or ``timeout_s`` passed: see `done`).

        :raises BaseException: the error given to `abort`, or the iterable's own error after
            the outcomes of every input before it.
        """
        with self._cond:
            while True:
                if self._abort is not None:
                    raise self._abort
                ready = self._pop_ready()
                if ready:
                    self._given += len(ready)
                    if self._sizes:
                        self.held_bytes -= sum(self._sizes.pop(o.index, 0) for o in ready)
                    return ready
                if self._total is not None and self._given >= self._total:
                    if self._final_error is not None:
                        error, self._final_error = self._final_error, None
                        raise error
                    return []
                # In slices: the main thread runs signal handlers (Ctrl-C, SIGTERM) only
                # between waits.
                self._waiting += 1
                try:
                    waited = self._cond.wait(_WAIT_SLICE_S if timeout_s is None else timeout_s)
                finally:
                    self._waiting -= 1
                if not waited and timeout_s is not None:
                    return []

    def done(self) -> bool:
        """True once every outcome has been taken."""
        with self._cond:
            return self._total is not None and self._given >= self._total

    def _pop_ready(self) -> list[Outcome[Any]]:
        if not self._ordered:
            ready = list(self._completed)
            self._completed.clear()
            return ready
        ready = []
        while self._next in self._ready:
            ready.append(self._ready.pop(self._next))
            self._next += 1
        return ready


class WorkSource:
    """Feeds machines their inputs (see the module docstring).

    :param inputs: the caller's ``(args, kwargs)`` pairs, read only as inputs are taken.
    :param encode: turns one pair into the encoded arguments (raises `SerializationError`).
    :param window: most inputs taken and not yet consumed by the caller.
    :param wake: runs a callable on the runtime's loop from another thread (the caller's,
        when consuming frees room in the window).
    :param on_read: called with each input read (its index, before encoding).
    :param on_reject: called with an input that cannot be encoded and its error.
    :param on_end: called once the iterable ends, with the number of inputs and the
        iterable's own error, if it raised one.
    :param lookup: a journal's lookup (`Recorder.lookup`): an input it has a value for is not
        run; ``on_recorded`` gets its index and value instead.
    :param held_bytes: bytes of results waiting for the caller; no input is read while they
        are `MAX_HELD_BYTES` or more (a slow consumer, or an early input still running while
        later ones finish, does not pile up a window of large results).
    :param on_change: called (on the loop) whenever inputs are read, given back or finished.
    """

    def __init__(
        self,
        inputs: Iterator[Input],
        encode: Callable[[tuple[Any, ...], Mapping[str, Any]], bytes],
        *,
        window: int,
        wake: Callable[[Callable[[], None]], None],
        on_read: Callable[[int], None],
        on_reject: Callable[[int, BaseException], None],
        on_end: Callable[[int, BaseException | None], None],
        lookup: Callable[[bytes], Any] | None = None,
        on_recorded: Callable[[int, Any], None] | None = None,
        held_bytes: Callable[[], int] = lambda: 0,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._held_bytes = held_bytes
        self._on_change = on_change
        self._lookup = lookup
        self._on_recorded = on_recorded
        self._inputs = inputs
        self._encode = encode
        self._on_read = on_read
        self._on_reject = on_reject
        self._on_end = on_end
        self._window = window
        self._wake = wake
        self._retries: collections.deque[Item] = collections.deque()
        self._taken = 0
        self._in_flight = 0
        self._exhausted = False
        self._closed = False
        self._changed = anyio.Event()
        self._lock = threading.Lock()
        self._consumed = 0
        self._blocked = False
        self._read_ahead: collections.deque[Item] = collections.deque()
        self._reading = False
        self._ended: tuple[int, BaseException | None] | None = None
        #: what the reading thread has read and the loop has not handed out yet
        self._incoming: list[tuple[int, Item | None, Exception | None, Any]] = []
        self._tg: anyio.abc.TaskGroup | None = None

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Read the iterable in tasks of ``tg`` (the batch's): cancelling it abandons a read
        blocked in the caller's iterable, instead of waiting for the iterable."""
        self._tg = tg

    @property
    def taken(self) -> int:
        """Inputs read from the iterable so far."""
        return self._taken

    @property
    def in_flight(self) -> int:
        """Inputs taken by machines and not yet finished."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Inputs given back for a retry, waiting for a machine."""
        return len(self._retries)

    @property
    def unhanded(self) -> int:
        """Inputs read (or given back) that no machine holds yet."""
        return len(self._retries) + len(self._read_ahead)

    @property
    def room(self) -> int:
        """Inputs the window lets the batch read beyond those read so far (0 once the
        iterable has ended)."""
        if self._exhausted:
            return 0
        with self._lock:
            return max(self._window - (self._taken - self._consumed), 0)

    @property
    def exhausted(self) -> bool:
        """The iterable has no more inputs."""
        return self._exhausted

    @property
    def drained(self) -> bool:
        """Every input has been read and handed out: none waits for a machine (one in flight
        may still be given back)."""
        return self._exhausted and not self._read_ahead and not self._retries

    async def take(self, timeout_s: float | None = None) -> Item | None:
        """The next input for a machine: one given back first, else the iterable's next.

        Waits while the window is full, or while nothing is left but inputs in flight (which may
        come back). Returns None once the batch has no more work, or after ``timeout_s``.
        """
        with anyio.move_on_after(timeout_s):
            while not self._closed:
                if self._retries:
                    return self._retries.popleft()
                if self._read_ahead and self._room_for_results():
                    self._in_flight += 1
                    return self._read_ahead.popleft()
                if not self._exhausted and not self._reading and self._room():
                    self._reading = True
                    assert self._tg is not None, "WorkSource.start was not called"
                    self._tg.start_soon(self._fill)
                    continue
                if self._exhausted and not self._in_flight and not self._read_ahead:
                    return None
                await self._changed.wait()
        return None

    def give_back(self, item: Item) -> None:
        """Run ``item`` again on the next machine that takes one. (An item stays in flight
        from `take` to `finished`, given back or not, so a batch waiting to retry one after a
        backoff is not over.)"""
        self._retries.append(item)
        self._notify()

    def finished(self, item: Item) -> None:
        """``item`` has its outcome (and is no longer in flight)."""
        self._in_flight -= 1
        self._notify()

    def close(self) -> None:
        """Stop handing out inputs (the batch is over): every `take` returns None."""
        self._closed = True
        self._notify()

    def consumed(self, count: int) -> None:
        """The caller has taken ``count`` more outcomes (called from the caller's thread)."""
        with self._lock:
            self._consumed += count
            blocked, self._blocked = self._blocked, False
        if blocked:
            self._wake(self._notify)

    def _room(self) -> bool:
        with self._lock:
            room = self._taken - self._consumed < self._window
            self._blocked = not room
        return room and self._room_for_results()

    def _room_for_results(self) -> bool:
        """Whether results waiting for the caller leave room for another input's."""
        with self._lock:
            room = self._held_bytes() < MAX_HELD_BYTES
            self._blocked = self._blocked or not room
        return room

    async def _fill(self) -> None:
        """Read (and encode) the next few inputs, in a worker thread: the iterable is the
        caller's code, and may be slow or block. What is read is handed out every
        ``_CHUNK_S`` while the thread reads on, so inputs read before one the iterable is slow
        to give run meanwhile."""
        with self._lock:
            room = self._window - (self._taken - self._consumed)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._publish_while_reading)
                await anyio.to_thread.run_sync(
                    self._read, self._taken, min(room, _CHUNK), abandon_on_cancel=True
                )
                tg.cancel_scope.cancel()
        finally:
            self._reading = False
            self._publish()

    async def _publish_while_reading(self) -> None:
        while True:
            await anyio.sleep(_CHUNK_S)
            self._publish()

    def _publish(self) -> None:
        """Hand out what the reading thread has read so far."""
        with self._lock:
            read, self._incoming = self._incoming, []
        for index, item, error, recorded in read:
            self._taken = index + 1
            self._on_read(index)
            if recorded is not MISSING:
                assert self._on_recorded is not None
                self._on_recorded(index, recorded)
            elif item is not None:
                self._read_ahead.append(item)
            else:
                assert error is not None
                self._on_reject(index, error)
        if self._ended is not None and not self._exhausted and not self._reading:
            self._exhausted = True
            self._on_end(*self._ended)
        self._notify()

    def _read(self, first: int, count: int) -> None:
        """(Worker thread.) Up to ``count`` inputs from index ``first`` on, each encoded or
        with its encoding error, and its recorded value (or `MISSING`), added to
        ``_incoming`` as each is read; reading stops early after ``_CHUNK_S`` seconds."""
        started = time.monotonic()
        for index in range(first, first + count):
            if self._closed:
                break  # the batch is over (this read was abandoned): take no more
            try:
                args, kwargs = next(self._inputs)
            except StopIteration:
                self._ended = (index, None)
                break
            except Exception as exc:
                # The iterable's own error: it ends the inputs, raised after those before it.
                self._ended = (index, exc)
                break
            entry: tuple[int, Item | None, Exception | None, Any]
            try:
                arguments = self._encode(args, kwargs)
            except SerializationError as exc:
                error = SerializationError(f"input {index}: {exc}")
                error.__cause__ = exc.__cause__
                entry = (index, None, error, MISSING)
            else:
                recorded = MISSING if self._lookup is None else self._lookup(arguments)
                entry = (index, Item(index, arguments), None, recorded)
            with self._lock:
                self._incoming.append(entry)
            if time.monotonic() - started > _CHUNK_S:
                break

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
        self._on_change()
