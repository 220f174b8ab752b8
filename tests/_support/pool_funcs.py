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
    """Wait until ``party`` calls have arrived in ``folder``, then ``(x, pid)``: a barrier that
    needs ``party`` calls running at once (TimeoutError after 30 s)."""
    Path(folder, f"{x}.{os.getpid()}").touch()
    limit = time.monotonic() + 30
    while len(os.listdir(folder)) < party:
        if time.monotonic() > limit:
            raise TimeoutError(f"call {x}: {party} calls never ran at once")
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
def hang_on_the_first_machine(pid_file: str, x: int) -> tuple[int, int]:
    """On the first machine that runs it (its worker's pid goes to ``pid_file``), mark call
    ``x`` as running (``pid_file.x``) and hang, to be killed; elsewhere ``(x, pid)``."""
    try:
        with open(pid_file, "x") as file:
            file.write(str(os.getpid()))
    except FileExistsError:
        while not Path(pid_file).read_text():
            time.sleep(0.01)  # the other call is writing it
    if int(Path(pid_file).read_text()) == os.getpid():
        Path(f"{pid_file}.{x}").touch()
        time.sleep(60)
    return x, os.getpid()


@flyjobs.remote(timeout_s=60)
def nap(seconds: float) -> int:
    """Sleep, then the worker's pid."""
    time.sleep(seconds)
    return os.getpid()


@flyjobs.remote(timeout_s=60)
def remember(value: int) -> list[int]:
    """Append ``value`` to a module global and return it: what persists between calls."""
    _seen.append(value)
    return list(_seen)


_seen: list[int] = []
