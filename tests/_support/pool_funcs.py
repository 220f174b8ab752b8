"""Functions the warm-pool tests run on pool machines (importable by the worker)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import flyjobs


@flyjobs.remote(timeout_s=60)
def pid_of(x: int) -> tuple[int, int]:
    """``(x, the worker's pid)``: which machine ran the call."""
    return x, os.getpid()


@flyjobs.remote(timeout_s=60)
def meet(folder: str, x: int, party: int) -> tuple[int, int]:
    """Wait (up to 30 s) until ``party`` calls have arrived in ``folder``, then ``(x, pid)``: a
    barrier that needs ``party`` machines running at once."""
    Path(folder, f"{x}.{os.getpid()}").touch()
    limit = time.monotonic() + 30
    while len(os.listdir(folder)) < party and time.monotonic() < limit:
        time.sleep(0.01)
    return x, os.getpid()


@flyjobs.remote(timeout_s=60)
def hang_the_first_time(pid_file: str) -> int:
    """On the first call, write this worker's pid to ``pid_file`` and hang (to be killed);
    afterwards return the pid."""
    if not os.path.exists(pid_file):
        Path(pid_file).write_text(str(os.getpid()))
        time.sleep(60)
    return os.getpid()


@flyjobs.remote(timeout_s=60)
def remember(value: int) -> list[int]:
    """Append ``value`` to a module global and return it: what persists between calls."""
    _seen.append(value)
    return list(_seen)


_seen: list[int] = []
