"""Remote functions of the trace tests that do not use OpenTelemetry themselves; the worker
imports this module by reference."""

from __future__ import annotations

import os
import sys

import flyjobs


@flyjobs.remote(timeout_s=60)
def seen(x: int) -> tuple[int, bool, str | None]:
    """``x``, whether OpenTelemetry is imported on the machine, and the TRACEPARENT it sees."""
    loaded = any(name.partition(".")[0] == "opentelemetry" for name in sys.modules)
    return x, loaded, os.environ.get("TRACEPARENT")


@flyjobs.remote(timeout_s=60, retries=1, retry_on=(ValueError,))
def fails_once(marker: str) -> str:
    """Raise ValueError the first time (a file ``marker`` is then made), return after."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise ValueError("first attempt fails")
    return "ok"
