"""Fan-out: ``fn.map`` and ``fn.starmap`` run one call per input, on one machine each.

Every input is checked and encoded before the first machine is created; calls then run under the
runtime's pool limit (``max_machines``), with deterministic call ids ``<batch_id>-<index>``.
Results come back in input order (or as they complete); a failure raises (or, with
``return_exceptions``, is yielded in its place), and leaving the loop early, an error or
cancellation cancels every call still running and destroys its machine.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

import anyio.to_thread

from ._call import Call, cancel_all
from ._dispatch import new_batch_id, spawn_batch
from ._options import CallOptions

__all__ = ("map_async", "map_calls", "results")


def map_calls(
    fn: Callable[..., Any],
    options: CallOptions,
    inputs: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]],
) -> list[Call[Any]]:
    """Check every input (``(args, kwargs)`` each), then start one call per input; return the
    handles in input order."""
    return spawn_batch(fn, options, inputs, batch_id=new_batch_id())


def results(
    calls: list[Call[Any]], *, order_outputs: bool, return_exceptions: bool
) -> Iterator[Any]:
    """Yield the calls' values (in input order, or as they finish); see the module docstring."""
    try:
        for call in calls if order_outputs else _as_completed(calls):
            try:
                value = call.result()
            except Exception as exc:
                if not return_exceptions:
                    raise
                yield exc
            else:
                yield value
    finally:
        cancel_all(calls)


async def map_async(
    calls: list[Call[Any]], *, order_outputs: bool, return_exceptions: bool
) -> AsyncIterator[Any]:
    """The async face of :func:`results`: the same values, awaited without blocking the loop.

    Leaving early cancels the calls still running; their machines are destroyed by the runtime
    in the background (the caller's loop is not blocked waiting for it).
    """
    try:
        source = _in_order(calls) if order_outputs else _completed_async(calls)
        async for call in source:
            try:
                value = await call.result_async()
            except Exception as exc:
                if not return_exceptions:
                    raise
                yield exc
            else:
                yield value
    finally:
        cancel_all(calls, timeout_s=0)


async def _in_order(calls: list[Call[Any]]) -> AsyncIterator[Call[Any]]:
    for call in calls:
        yield call


async def _completed_async(calls: list[Call[Any]]) -> AsyncIterator[Call[Any]]:
    by_future = {call._future: call for call in calls}
    completed = concurrent.futures.as_completed(by_future)
    while True:
        # A worker thread waits for the next one to finish; if this is cancelled, the calls
        # are cancelled too (see map_async), which lets that thread finish.
        future = await anyio.to_thread.run_sync(next, completed, None, abandon_on_cancel=True)
        if future is None:
            return
        yield by_future[future]


def _as_completed(calls: list[Call[Any]]) -> Iterator[Call[Any]]:
    by_future = {call._future: call for call in calls}
    for future in concurrent.futures.as_completed(by_future):
        yield by_future[future]
