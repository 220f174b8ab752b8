"""The caller's trace context for the function's own spans on the machine.

A call whose caller traces carries the W3C ``traceparent`` of the caller's span of the call.
While the function runs, the worker gives it to the function's code two ways: the
``TRACEPARENT`` environment variable (the OpenTelemetry convention for handing a context to a
process), and, when the function's code has imported OpenTelemetry (``opentelemetry`` is in
``sys.modules`` once its module is imported), that context attached as the current one, so
the spans it starts are children of the call's span and join the caller's trace. Where they
go is the function's own setup (its tracer provider, the ``OTEL_*`` variables given with
``env=``).

The worker never imports OpenTelemetry for a function that does not: a call without a
``traceparent``, or a function whose code never imported it, costs one dictionary look-up.
Calls that run at once on one machine (a pool's ``max_concurrency``) share the process's
environment: there ``TRACEPARENT`` is the latest call's, and only the attached context is the
call's own.

Standard library only at import time, as every module a machine imports.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("Joined", "traced_coroutine")

#: The environment variable that hands a trace context to a process.
TRACEPARENT_ENV = "TRACEPARENT"


class Joined:
    """Run the block in the caller's trace: ``TRACEPARENT`` set (and restored after), and the
    context attached when the function's code uses OpenTelemetry."""

    # A class rather than contextlib.contextmanager: contextlib is no import a machine pays.
    __slots__ = ("_previous", "_token", "_traceparent")

    def __init__(self, traceparent: str) -> None:
        self._traceparent = traceparent
        self._previous: str | None = None
        self._token: object | None = None

    def __enter__(self) -> None:
        self._previous = os.environ.get(TRACEPARENT_ENV)
        os.environ[TRACEPARENT_ENV] = self._traceparent
        self._token = _attach(self._traceparent)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _detach(self._token)
        if self._previous is None:
            os.environ.pop(TRACEPARENT_ENV, None)
        else:
            os.environ[TRACEPARENT_ENV] = self._previous


async def traced_coroutine(coroutine: Any, traceparent: str) -> Any:
    """Await ``coroutine`` in the caller's trace (on the machine's event loop, whose context is
    not the calling thread's)."""
    with Joined(traceparent):
        return await coroutine


def _attach(traceparent: str) -> object | None:
    if "opentelemetry" not in sys.modules:
        return None  # the function's code does not use OpenTelemetry: nothing to join
    try:
        # Only when the function's code imported OpenTelemetry already: keeps machines light.
        from opentelemetry import context
        from opentelemetry.trace.propagation import tracecontext  # as above: its API's module
    except ImportError:
        return None
    extracted = tracecontext.TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    token: object = context.attach(extracted)
    return token


def _detach(token: Any) -> None:
    from opentelemetry import context  # imported by `_attach` already

    context.detach(token)
