"""Remote functions of the standby tests (the worker imports this module by reference)."""

from __future__ import annotations

import os
import time

import flyjobs


@flyjobs.remote(timeout_s=60, retries=1)
def machine_of(x: int, gate: str = "") -> tuple[int, str]:
    """``x`` and the machine it ran on, once ``gate`` (a path) exists, if one is given."""
    while gate and not os.path.exists(gate):
        time.sleep(0.02)
    return x, os.environ["FLY_MACHINE_ID"]


pool = flyjobs.Pool(max=1, standby=True, idle_s=30)


@flyjobs.remote(timeout_s=60, pool=pool)
def pooled_machine() -> str:
    """The machine the pooled call ran on."""
    return os.environ["FLY_MACHINE_ID"]
