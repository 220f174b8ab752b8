"""Waiting in a test for what another process or thread does (a machine ends, an object
appears, a server closes a connection): the one polling loop of the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.abc

T = TypeVar("T")


def eventually(condition: Callable[[], T | None], what: str, limit_s: float = 30.0) -> T:
    """Call ``condition`` every 50 ms until it returns something true, and return that (a
    condition that returns ``x or None`` gives ``x``).

    ``limit_s`` (seconds) bounds a hung test; it is not a timing check, so make it generous.

    :raises AssertionError: ``never happened: {what}``, once ``limit_s`` has passed.
    """
    deadline = time.monotonic() + limit_s
    while not (found := condition()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)
    return found


async def closed_by_peer(stream: anyio.abc.SocketStream, limit_s: float = 20.0) -> bool:
    """True once the server closed ``stream``, after any answer; False if it still holds it
    after ``limit_s`` seconds (a bound for a hung test, not a timing check)."""
    with anyio.move_on_after(limit_s):
        try:
            while True:
                await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return True
    return False
