"""Helpers of the warm-pool tests: a pool's machines on the embedded emulator."""

from __future__ import annotations

import time
from collections.abc import Callable

from _remote_helpers import machines, metadata

import flyjobs
from flyjobs._calls.runtime import Runtime
from flyjobs._wire.protocol import META_POOL
from flyjobs.machines import Machine


def pool_machines(runtime: Runtime, pool: flyjobs.Pool) -> list[Machine]:
    """Every machine the pool has had, destroyed ones included."""
    return [m for m in machines(runtime) if metadata(m).get(META_POOL) == pool.name]


def live(runtime: Runtime, pool: flyjobs.Pool) -> list[Machine]:
    """The pool's machines that are not destroyed."""
    return [m for m in pool_machines(runtime, pool) if m.state != "destroyed"]


def eventually(condition: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    """Poll ``condition`` until it holds (a bound on a hung test, not a timing check)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)
