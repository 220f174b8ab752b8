"""The trivial remote functions the benches call (a module of their own, so the worker imports
nothing but this and flyjobs)."""

import flyjobs


@flyjobs.remote(timeout_s=60)
def noop(x: int) -> int:
    return x


@flyjobs.remote(timeout_s=60)
def sleep_s(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@flyjobs.remote(timeout_s=120)
def wait_for_file(path: str) -> str:
    """Return "REAL" once `path` exists."""
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return "REAL"


@flyjobs.remote(timeout_s=60)
def slow_at(x: int, slow: int, seconds: float) -> int:
    """``x``; input ``slow`` sleeps ``seconds`` first."""
    import time

    if x == slow:
        time.sleep(seconds)
    return x
