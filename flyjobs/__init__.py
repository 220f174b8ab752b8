"""flyjobs: run Python functions on Fly.io Machines, one ephemeral machine per call.

```python
import flyjobs

@flyjobs.remote(memory_mb=512, timeout_s=120)
def square(x: int) -> int:
    return x * x

square.remote(7)  # 49, computed on a machine
```

The public names are imported lazily: ``python -m flyjobs.worker`` (which every machine runs)
imports this package first, and must not pay for httpx, pydantic or the emulator.
"""

from __future__ import annotations

import importlib

from . import _exceptions  # standard library only: cheap for the worker

__version__ = "0.1.0"

# Not `from typing import TYPE_CHECKING`: importing typing costs every machine ~5 ms of start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._batches.map import MapResults as MapResults
    from ._batches.progress import PhaseStats as PhaseStats
    from ._batches.progress import Summary as Summary
    from ._batches.work import Outcome as Outcome
    from ._calls.handle import Call as Call
    from ._calls.handle import CallStatus as CallStatus
    from ._calls.handle import Timings as Timings
    from ._declare.function import Function as Function
    from ._declare.function import remote as remote
    from ._declare.pool import Pool as Pool
    from ._declare.schedule import Cron as Cron
    from ._exceptions import APIError as APIError
    from ._exceptions import AuthenticationError as AuthenticationError
    from ._exceptions import BadRequestError as BadRequestError
    from ._exceptions import BudgetExceededError as BudgetExceededError
    from ._exceptions import CallCancelledError as CallCancelledError
    from ._exceptions import CallError as CallError
    from ._exceptions import CallTimeoutError as CallTimeoutError
    from ._exceptions import ConfigError as ConfigError
    from ._exceptions import ConflictError as ConflictError
    from ._exceptions import FlyjobsError as FlyjobsError
    from ._exceptions import FlyjobsTimeoutError as FlyjobsTimeoutError
    from ._exceptions import ForbiddenError as ForbiddenError
    from ._exceptions import LeaseHeldError as LeaseHeldError
    from ._exceptions import MachineCrashedError as MachineCrashedError
    from ._exceptions import NotFoundError as NotFoundError
    from ._exceptions import OutOfMemoryError as OutOfMemoryError
    from ._exceptions import PreconditionFailedError as PreconditionFailedError
    from ._exceptions import RateLimitedError as RateLimitedError
    from ._exceptions import RemoteError as RemoteError
    from ._exceptions import RemoteImportError as RemoteImportError
    from ._exceptions import ResultTooLargeError as ResultTooLargeError
    from ._exceptions import SerializationError as SerializationError
    from ._exceptions import ServerError as ServerError
    from ._exceptions import TooManyFailuresError as TooManyFailuresError
    from ._exceptions import TransportError as TransportError
    from ._exceptions import UnknownCallError as UnknownCallError
    from ._exceptions import UnprocessableError as UnprocessableError
    from ._exceptions import WaitTimeoutError as WaitTimeoutError


_WHERE: dict[str, str] = {
    "Call": "._calls.handle",
    "CallStatus": "._calls.handle",
    "Timings": "._calls.handle",
    "Function": "._declare.function",
    "remote": "._declare.function",
    "Cron": "._declare.schedule",
    "Pool": "._declare.pool",
    "MapResults": "._batches.map",
    "PhaseStats": "._batches.progress",
    "Summary": "._batches.progress",
    "Outcome": "._batches.work",
    **dict.fromkeys(_exceptions.__all__, "._exceptions"),
}

__all__ = tuple(sorted(_WHERE)) + ("__version__",)

# Public classes name `flyjobs` as their module, as httpx's do: reprs, tracebacks and pickles say
# `flyjobs.ConfigError`, not where it is defined, and an exception raised on a machine travels
# as `flyjobs:ConfigError`, which `__getattr__` resolves. The lazily imported classes say so in
# their own bodies (`__module__ = "flyjobs"`): setting it here would import them.
for _name in _exceptions.__all__:
    getattr(_exceptions, _name).__module__ = __name__
del _name


if not TYPE_CHECKING:
    # Hidden from type checkers, which then see only the names imported above: a typo such as
    # `flyjobs.remot` is an error, not `Any`.
    def __getattr__(name: str) -> object:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module 'flyjobs' has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # later lookups skip this hook
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
