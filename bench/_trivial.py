"""The trivial remote function bench/remote.py calls (a module of its own, so the worker imports
nothing but this and flyjobs)."""

import flyjobs


@flyjobs.remote(timeout_s=60)
def noop(x: int) -> int:
    return x
