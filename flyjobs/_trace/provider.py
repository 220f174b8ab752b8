"""Whether the caller traces its calls, and with which tracer.

Tracing is on when OpenTelemetry is configured in this process: the app set a tracer provider
(``opentelemetry.trace.set_tracer_provider``, or ``opentelemetry-instrument`` did), or the
standard variables name an exporter (``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_SDK_DISABLED=true`` turns it off). In the second
case flyjobs makes a tracer provider of its own from them (the SDK's resource and exporter
settings), never the global one, which stays the app's to set. The check imports nothing: an
app that set a provider has imported ``opentelemetry.trace`` already.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

__all__ = ("tracer",)

logger = logging.getLogger("flyjobs.trace")

#: The instrumentation scope of flyjobs's spans.
SCOPE = "flyjobs"
#: Variables that name where spans go: any of them set makes flyjobs trace.
_EXPORTER_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)

#: (provider, its tracer) last used: a provider's tracer is made once.
_cached: tuple[Any, Any] | None = None
#: flyjobs's own provider, made from the variables once (None until needed).
_own: Any = None


def tracer() -> Any | None:
    """The OpenTelemetry tracer of flyjobs's spans, or None when tracing is off (see the module
    docstring). Cheap when off: a dictionary look-up and a few environment reads."""
    global _cached
    api = sys.modules.get("opentelemetry.trace")
    provider = None
    if api is not None:
        provider = api.get_tracer_provider()
        if isinstance(provider, (api.ProxyTracerProvider, api.NoOpTracerProvider)):
            provider = None
    if provider is None:
        if not _configured(os.environ):
            return None
        provider = _own_provider()
        if provider is None:
            return None
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer(SCOPE))
    return _cached[1]


def _configured(env: os._Environ[str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return any(env.get(name, "").strip() for name in _EXPORTER_VARIABLES)


def _own_provider() -> Any | None:
    """flyjobs's tracer provider made from the ``OTEL_*`` variables (once), or None when the
    OpenTelemetry SDK is not installed or names no exporter it has."""
    global _own
    if _own is not None:
        return _own
    try:
        # The SDK is an optional dependency (the `otel` extra), imported only once the
        # variables ask for it; the entry points name its exporters.
        from importlib.metadata import entry_points

        from opentelemetry.sdk.resources import Resource  # optional dependency, as above
        from opentelemetry.sdk.trace import TracerProvider  # optional dependency, as above
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # optional, as above
    except ImportError:
        return None
    provider = TracerProvider(resource=Resource.create())
    for name in _exporter_names(os.environ):
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            logger.warning(
                "OTEL_TRACES_EXPORTER names the exporter %r, which is not installed here:"
                " flyjobs's spans go nowhere (for OTLP over HTTP, pip install"
                " opentelemetry-exporter-otlp-proto-http)",
                name,
            )
            continue
        provider.add_span_processor(BatchSpanProcessor(found[0].load()()))
    _own = provider
    return provider


def _exporter_names(env: os._Environ[str]) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``), ``otlp`` resolved by the
    OTLP protocol variables (default ``http/protobuf``, as the specification says)."""
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    otlp = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    return [otlp if name == "otlp" else name for name in names if name]
