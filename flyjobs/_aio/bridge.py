"""Awaiting work that runs on the flyjobs runtime's event loop from any other event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TypeVar

__all__ = ("await_future",)

T = TypeVar("T")


async def await_future(future: concurrent.futures.Future[T]) -> T:
    """Await a :class:`concurrent.futures.Future` from the caller's event loop.

    Cancelling the awaiting task cancels the future, which cancels the work behind it. A future
    cancelled by someone else raises :class:`concurrent.futures.CancelledError`, as
    ``future.result()`` would.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return await _await_in_thread(future)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise concurrent.futures.CancelledError() from None


async def _await_in_thread(future: concurrent.futures.Future[T]) -> T:
    # Not asyncio (trio): park a worker thread on the future instead.
    import anyio.to_thread

    try:
        return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
    except BaseException:
        future.cancel()
        raise
