"""Run an event loop that may be closed while the interpreter exits.

The runtime's loop and the embedded emulator's loop run on daemon threads and are stopped by
an ``atexit`` handler. ``asyncio.run`` ends by joining the loop's default executor from a new
helper thread, and Python 3.12 refuses to start threads at that point ("can't create new
thread at interpreter shutdown"): the loop's close then raised and printed a traceback at the
end of every script. The loop here joins its executor on its own thread instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ("run",)

T = TypeVar("T")


class _Loop(asyncio.SelectorEventLoop):
    """The platform's selector loop with a default executor it joins without a new thread."""

    def __init__(self) -> None:
        super().__init__()
        self._executor = ThreadPoolExecutor(thread_name_prefix="flyjobs-loop-io")
        self.set_default_executor(self._executor)

    # ``timeout``: asyncio's signature, which Python 3.12's runner passes.
    async def shutdown_default_executor(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Join the executor's threads here, blocking the (closing) loop until its jobs end.

        Its jobs are short (a ``/proc`` scan, a name lookup); ``timeout`` is not applied.
        """
        self._executor.shutdown(wait=True)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end in a new event loop, as ``asyncio.run`` does (remaining tasks
    are cancelled, async generators closed), and close the loop without starting a thread."""
    with asyncio.Runner(loop_factory=_Loop) as runner:
        return runner.run(main)
