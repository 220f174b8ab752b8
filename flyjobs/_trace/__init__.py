"""Traces: each call's life as OpenTelemetry spans, when the caller has OpenTelemetry set up.

Owns: `provider` (whether tracing is on, and the tracer: the app's tracer provider, or one made
from the standard ``OTEL_*`` variables) and `spans` (a call's span and its phase spans, made
from the attempt lifecycle's clocks and the timings the worker reports with each result; a
map's span over its inputs' calls).

May import: the standard library, and ``opentelemetry`` only inside functions that run once
tracing is on (it is an optional dependency, the ``otel`` extra): without OpenTelemetry
configured nothing of it is imported. Imported by `flyjobs._calls` and `flyjobs._batches`.
"""
