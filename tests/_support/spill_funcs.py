"""Remote functions of the spilled-arguments tests (tests/store/test_spilled_arguments.py).

On a machine whose environment names a gate file (``SPILL_GATE``), importing this module waits
until that file exists. The worker imports a call's function before it fetches the call's
spilled arguments, so a test can replace them in the bucket in between, at a moment it chooses.
"""

from __future__ import annotations

import os
import time

import flyjobs

_GATE = os.environ.get("SPILL_GATE")
while _GATE and not os.path.exists(_GATE):
    time.sleep(0.01)  # bounded by the call's deadline, which the worker enforces


@flyjobs.remote(timeout_s=60)
def size_and_pid(data: bytes) -> tuple[int, int]:
    """The size of `data`, and the process (the machine) that measured it."""
    return len(data), os.getpid()


@flyjobs.remote(timeout_s=60, pickle=True)
def pickled_size_and_pid(data: bytes) -> tuple[int, int]:
    """`size_and_pid`, its arguments and result as pickle."""
    return len(data), os.getpid()
