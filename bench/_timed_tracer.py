"""A tracer provider that times the OpenTelemetry SDK's own work: bench/trace.py's floor.

`TimedProvider` wraps an SDK tracer provider through the API's public interfaces
(``opentelemetry.trace.TracerProvider``, ``Tracer`` and ``Span``): every call flyjobs makes into
the tracer or one of its spans goes to the SDK's, and the CPU seconds the calling thread spends
in it (``time.thread_time``: time the thread waits descheduled on a busy box is not counted) add
up in `TimedProvider.seconds`. What is left of tracing's cost once those seconds are taken out
is flyjobs's own code and what the spans cost the rest of the process (the garbage collector's
work on them, caches).

The wrapping itself costs about a microsecond per span; a clock read's part of it is counted in
the SDK's seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace as api
from opentelemetry.context import Context
from opentelemetry.util import types

_clock = time.thread_time


class TimedProvider(api.TracerProvider):
    """``inner``'s tracers, timed (see the module docstring)."""

    def __init__(self, inner: api.TracerProvider) -> None:
        self._inner = inner
        #: seconds spent in the SDK's tracers and spans since the last `reset`
        self.seconds = 0.0

    def reset(self) -> float:
        """The seconds counted so far; the count starts again from 0."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes | None = None,
    ) -> api.Tracer:
        inner = self._inner.get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        return _TimedTracer(self, inner)


class _TimedTracer(api.Tracer):
    def __init__(self, provider: TimedProvider, inner: api.Tracer) -> None:
        self._provider = provider
        self._inner = inner

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: api.SpanKind = api.SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[api.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> api.Span:
        started = _clock()
        span = self._inner.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        self._provider.seconds += _clock() - started
        return _TimedSpan(self._provider, span)

    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
        # Untimed: flyjobs starts no current span. Any: the API's return type is private.
        return self._inner.start_as_current_span(name, *args, **kwargs)


class _TimedSpan(api.Span):
    def __init__(self, provider: TimedProvider, inner: api.Span) -> None:
        self._provider = provider
        self._inner = inner

    def end(self, end_time: int | None = None) -> None:
        started = _clock()
        self._inner.end(end_time)
        self._provider.seconds += _clock() - started

    def get_span_context(self) -> api.SpanContext:
        # Not timed: the SDK calls it on a parent within a start_span timed already.
        return self._inner.get_span_context()

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        started = _clock()
        self._inner.set_attributes(attributes)
        self._provider.seconds += _clock() - started

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        started = _clock()
        self._inner.set_attribute(key, value)
        self._provider.seconds += _clock() - started

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        started = _clock()
        self._inner.add_event(name, attributes, timestamp)
        self._provider.seconds += _clock() - started

    def update_name(self, name: str) -> None:
        self._inner.update_name(name)

    def is_recording(self) -> bool:
        return self._inner.is_recording()

    def set_status(self, status: Any, description: str | None = None) -> None:
        started = _clock()
        self._inner.set_status(status, description)
        self._provider.seconds += _clock() - started

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        started = _clock()
        self._inner.record_exception(exception, attributes, timestamp, escaped)
        self._provider.seconds += _clock() - started
