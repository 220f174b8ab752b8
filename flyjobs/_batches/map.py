"""Fan-out: ``fn.map`` and ``fn.starmap`` over a batch of machines (see `flyjobs._batches.batch`).

The caller's iterable is read lazily, at most a window of inputs ahead of what the caller has
consumed; each input is encoded as it is read, and one that cannot be is that input's error.
Results come back in input order (or as they complete); a failure raises (or, with
``return_exceptions``, is yielded in its place). However the map ends (exhausted, an early
``break``, an error, ``max_failures``, Ctrl-C, SIGTERM, interpreter exit), every machine of the
batch is destroyed before the map returns or raises.
"""

from __future__ import annotations

import collections
import dataclasses
import operator
import signal
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence, Sized
from types import FrameType, TracebackType
from typing import Any, Literal, Self, TypeVar, cast

import anyio
import anyio.to_thread

from .._aio.blocking import warn_if_in_event_loop
from .._calls.plan import new_batch_id, plan
from .._calls.runtime import RUNTIME_THREAD, Runtime, get_runtime
from .._cost.ledger import Ledger
from .._cost.prices import prices_for
from .._declare.options import CallOptions, check_max_cost
from .._exceptions import ConfigError
from .._wire.remote_errors import is_remote
from .batch import Batch
from .progress import Progress, Summary
from .work import Input, Outcome, Outcomes, Recorder

__all__ = ("MapResults", "input_count", "map_async", "results", "start_map")

#: Seconds closing a map waits for its machines to be destroyed.
_CLOSE_TIMEOUT_S = 30.0
#: Least inputs read ahead of the caller, whatever ``max_machines``.
_MIN_WINDOW = 256

T = TypeVar("T")


class _MapRun:
    """One running map: its batch on the runtime's loop, and what the caller's side needs."""

    def __init__(
        self,
        runtime: Runtime,
        batch: Batch,
        outcomes: Outcomes,
        progress: Progress | None,
        journal: Recorder | None = None,
    ) -> None:
        self._journal = journal
        self.runtime = runtime
        self.batch = batch
        self.outcomes = outcomes
        self._progress = progress
        self._ended = threading.Event()

        async def run() -> None:
            try:
                await batch.run()
            finally:
                try:
                    if journal is not None:
                        # Off the loop: closing writes what is pending (a store journal
                        # blocks on the network).
                        with anyio.CancelScope(shield=True):
                            if batch.ledger is not None:
                                await batch.settled()
                                spent = batch.ledger.usd
                                await anyio.to_thread.run_sync(journal.add_spent, spent)
                            await anyio.to_thread.run_sync(journal.close)
                finally:
                    self._ended.set()

        self._future = runtime.submit(run)
        self._previous_sigterm: Any = None
        self._install_sigterm()

    def stop(self, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Cancel what is still running and wait (up to ``timeout_s``) until every machine of
        the batch is destroyed; end the progress display."""
        self._future.cancel()
        try:
            self._ended.wait(timeout_s)
        finally:  # a second Ctrl-C while waiting too
            if self._progress is not None:
                self._progress.stop()
            self._restore_sigterm()

    def cancel(self) -> None:
        """Cancel without waiting (the runtime destroys the machines in the background)."""
        self._future.cancel()
        if self._progress is not None:
            self._progress.stop()
        self._restore_sigterm()

    async def stop_async(self) -> None:
        self._future.cancel()
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._ended.wait, _CLOSE_TIMEOUT_S)
        finally:
            # Also when the wait is cancelled all the same (asyncio.run ending cancels the
            # task that closes a generator left unclosed). The runtime destroys the machines.
            if self._progress is not None:
                self._progress.stop()
            # An async map in the main thread installed the handler as well: a SIGTERM after
            # the map must not raise SystemExit wherever the program then is.
            self._restore_sigterm()

    # SIGTERM (a scheduler or container stopping the script) would end the process without any
    # clean-up; while a map runs in the main thread, it raises SystemExit instead, so the map
    # destroys its machines on the way out (the exit status stays 128 + SIGTERM).

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def _restore_sigterm(self) -> None:
        previous, self._previous_sigterm = self._previous_sigterm, None
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class MapResults(Iterator[T]):
    """The values of a ``fn.map`` (an iterator; also a context manager that closes it), of
    the function's return type ``T`` (with ``return_exceptions``, or a failed input's error).

    ``close()`` (or leaving a ``with`` block, or the iterator's end) cancels what is still
    running and destroys every machine of the batch. `summary` tells what the batch did, and
    `outcomes` gives each input's attempts and timings with its value.
    """

    __module__ = "flyjobs"

    def __init__(self, run: _MapRun, *, return_exceptions: bool) -> None:
        self._run = run
        self._return_exceptions = return_exceptions
        self._buffer: collections.deque[Outcome[T]] = collections.deque()
        self._closed = False
        self._loop_checked = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        if not self._loop_checked:
            self._loop_checked = True
            warn_if_in_event_loop("iterating fn.map(...)", "`async for v in fn.map.aio(...)`")
        outcome = self._next_outcome()
        if outcome.ok or self._return_exceptions:
            # With return_exceptions, T includes the errors (as fn.map's overloads say).
            return cast(T, outcome.value)
        self.close()
        error = cast(Exception, outcome.value)
        # Raised here for the first time in this thread: a remote error shows the caller's
        # frames only (see is_remote).
        raise error.with_traceback(None) if is_remote(error) else error

    def outcomes(self) -> Iterator[Outcome[T]]:
        """Each input's :class:`~flyjobs.Outcome` (value or error, attempts, call id, phase
        timings in seconds) in place of its value; a failed input's error is never raised.

        It reads the same stream as iterating the values: use one or the other.
        """
        warn_if_in_event_loop("fn.map(...).outcomes()", "`async for v in fn.map.aio(...)`")
        while True:
            try:
                yield self._next_outcome()
            except StopIteration:
                return

    def _next_outcome(self) -> Outcome[T]:
        if self._closed:
            raise StopIteration
        try:
            if not self._buffer:
                ready = self._run.outcomes.take()
                if not ready:
                    self.close()
                    raise StopIteration
                self._run.batch.source.consumed(len(ready))
                self._buffer.extend(ready)
            return self._buffer.popleft()
        except StopIteration:
            raise
        except BaseException:
            # An error of the batch, Ctrl-C, SIGTERM: no machine outlives the map.
            self.close()
            raise

    def close(self) -> None:
        """Stop the map: cancel what still runs and wait until its machines are destroyed."""
        if not self._closed:
            self._closed = True
            self._run.stop()

    def summary(self) -> Summary:
        """Counts, per-phase timings and cost of the batch (see
        `flyjobs._batches.progress.Summary`). Once the map has ended, it first waits (briefly)
        until every machine is billed from its own events."""
        if self._closed and threading.current_thread().name != RUNTIME_THREAD:
            self._run.runtime.call(self._run.batch.settled)
        return self._run.batch.stats.summary()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped unfinished (a `break` out of a for loop): closed as a generator would be.
        if getattr(self, "_closed", True):
            return
        if threading.current_thread().name == RUNTIME_THREAD:
            self._run.cancel()  # waiting here would block the loop that does the destroying
        else:
            self.close()


def start_map(
    fn: Callable[..., Any],
    options: CallOptions,
    inputs: Iterable[Input],
    *,
    max_machines: int | None,
    reuse: bool,
    max_failures: int | None,
    progress: bool | None,
    order_outputs: bool,
    return_exceptions: bool,
    journal: Recorder | None = None,
    output: Literal["live", "errors", "none"] | None = None,
    total_hint: int | None = None,
    max_cost_usd: float | None = None,
    standby: bool | None = None,
) -> _MapRun:
    """Check the map's settings and start its batch; see the module docstring. A ``journal``
    makes it resumable (`flyjobs._batches.resume`); it is closed when the map ends. ``output``
    overrides the function's ``output`` option for this map. ``total_hint`` is the number of
    inputs when known beforehand (`input_count`): progress shows no total and no ETA without
    it until the last input is read. ``max_cost_usd``: the batch's cap in USD
    (`flyjobs._cost.budget`). ``standby``: claim standby machines
    first (None: the ``standby`` setting).

    :raises ConfigError: an invalid setting, or a setting the calls need is missing.
    :raises SerializationError: the function cannot be referenced by the worker.
    """
    try:
        _check_count("max_machines", max_machines)
        _check_count("max_failures", max_failures)
        cap = check_max_cost(max_cost_usd)
        if standby is not None and not isinstance(standby, bool):
            raise ConfigError(f"standby={standby!r}: give True, False, or None (the setting)")
        for name, flag in (("reuse", reuse), ("order_outputs", order_outputs)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name}={flag!r}: give True or False")
        if progress is not None and not isinstance(progress, bool):
            raise ConfigError(
                f"progress={progress!r}: give True, False, or None (on when stderr is a terminal)"
            )
        if max_failures is not None:
            if not return_exceptions:
                raise ConfigError(
                    "max_failures= needs return_exceptions=True: without it the first failure"
                    " already stops the map"
                )
        if output is not None:
            options = options.replaced(output=output)
        batch_plan = dataclasses.replace(
            plan(fn, options, batch_id=new_batch_id()), batch_size=total_hint
        )
        runtime = get_runtime()
        ledger = Ledger(prices_for(runtime.settings.prices))
        if journal is not None:
            ledger.earlier_usd = journal.spent_usd()
        limit = max_machines or runtime.settings.max_machines
        outcomes = Outcomes(ordered=order_outputs)
        batch = Batch(
            runtime,
            batch_plan,
            iter(inputs),
            outcomes,
            max_machines=limit,
            # Through the object store machines cannot pull from this process: they take fixed
            # slices instead (see flyjobs._batches.batch).
            reuse=reuse,
            max_failures=max_failures,
            window=max(_MIN_WINDOW, 4 * limit),
            total_hint=total_hint,
            journal=journal,
            ledger=ledger,
            max_cost_usd=cap,
            standby=runtime.settings.standby if standby is None else standby,
        )
        display = None
        if progress if progress is not None else sys.stderr.isatty():
            display = Progress(
                batch.stats,
                f"{getattr(fn, '__name__', 'map')}.map {batch_plan.batch_id}",
                throttled=lambda: _throttled(runtime),
            )
        return _MapRun(runtime, batch, outcomes, display, journal)
    except BaseException:
        if journal is not None:
            journal.close()
        raise


def input_count(iterables: Sequence[Iterable[Any]]) -> int | None:
    """How many inputs zipping ``iterables`` gives, when each tells its length: the least of
    their ``len()`` (else ``operator.length_hint``); None when one tells nothing (a
    generator)."""
    lengths = []
    for iterable in iterables:
        if isinstance(iterable, Sized):
            length = len(iterable)
        else:
            length = operator.length_hint(iterable, -1)
        if length < 0:
            return None
        lengths.append(length)
    return min(lengths, default=None)


def _check_count(name: str, value: object) -> None:
    """A setting that is None or a whole number of at least 1 (a bool is not a count)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r}: give a whole number of at least 1 (or None)")
    if value < 1:
        raise ConfigError(f"{name}={value}: must be at least 1")


def _throttled(runtime: Runtime) -> bool:
    at = runtime.client.throttled_at
    return at is not None and time.monotonic() - at < 5.0


def results(run: _MapRun, *, return_exceptions: bool) -> MapResults[Any]:
    """The caller's iterator over a started map."""
    return MapResults(run, return_exceptions=return_exceptions)


async def map_async(run: _MapRun, *, return_exceptions: bool) -> AsyncGenerator[Any, None]:
    """The async face of `MapResults`: the same values, awaited without blocking the loop.

    Leaving early (or an error, or cancellation) cancels what still runs and waits, without
    blocking the loop, until the batch's machines are destroyed.
    """
    try:
        while True:
            ready = await anyio.to_thread.run_sync(run.outcomes.take, abandon_on_cancel=True)
            if not ready:
                return
            run.batch.source.consumed(len(ready))
            for outcome in ready:
                if not outcome.ok and not return_exceptions:
                    raise outcome.value
                yield outcome.value
    finally:
        await run.stop_async()
