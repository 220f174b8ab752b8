"""A remote function that makes its own span on the machine, exported by OTLP/HTTP to where
the machine's ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` says; the worker imports this module by
reference, and OpenTelemetry with it (as a user's module that traces would)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

import flyjobs

_tracer: Any = None


def _own_tracer() -> Any:
    # A provider of the function's own, made on the machine (the test process has its own).
    global _tracer
    if _tracer is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
        _tracer = provider.get_tracer("trace_otel_funcs")
    return _tracer


@flyjobs.remote(timeout_s=60)
def inside(x: int) -> int:
    """``2 * x``, in a span ``inside`` of the function's own (exported before it returns)."""
    with _own_tracer().start_as_current_span("inside") as span:
        span.set_attribute("x", x)
        assert trace.get_current_span() is span
        return 2 * x


@flyjobs.remote(timeout_s=60)
async def inside_async(x: int) -> int:
    """As `inside`, from a coroutine (which runs on the machine's event loop)."""
    with _own_tracer().start_as_current_span("inside") as span:
        span.set_attribute("x", x)
        return 2 * x
