"""A call's span and its phase spans, and a map's span over its inputs' calls.

A call's span runs from the call (or, in a map, from the input being read) to its outcome; its
children are the phases only flyjobs sees, each span named as the phase:

- ``queued``: the call waited for a place among the machines in flight (to its first attempt);
- ``create``: the create request of the machine the attempt was carried by, to the API's answer
  (or to the worker's start, when the machine started before the answer came);
- ``boot``: the end of ``create``, to the worker's start on the machine;
- ``import``: the worker importing the function (none when its machine ran it already);
- ``run``: the function;
- ``deliver``: the worker encoding and sending the result, to its arrival here;
- ``retry``: a failed attempt's end to the next attempt's start (backoff, and the wait for a
  machine), with the failure it retries.

The machine-side phases come from the timings the worker reports with the result (unix
seconds of the machine's clock), kept within the attempt's own span of time here so that a
skewed clock cannot put a phase outside its call. A phase span carries ``flyjobs.attempt``
(and a ``retry``, the failed attempt's ``flyjobs.machine_id``); the call's span carries the last
attempt's
``flyjobs.machine_id``, ``flyjobs.region``, ``flyjobs.image``, ``flyjobs.attempt`` (the attempts
made), ``flyjobs.exit_code`` (when the attempt ended with the machine's exit) and
``flyjobs.cost_usd`` (the sum of the attempts' costs, once any is known: `CallTrace.add_cost`).

In a map, an input's ``queued`` and ``deliver`` are attributes of its call's span rather than
spans of their own: ``flyjobs.queued_s`` (from the input being read to its first attempt: the
call span's first seconds) and ``flyjobs.deliver_s`` (the last attempt's ``deliver``: from the
worker starting to send the result to its arrival here, just before the call span's end). A map
of N inputs then makes about 2N spans rather than 4N: each span costs the caller's event loop,
which runs the map, about 30 µs of the SDK's own work (``bench/trace.py``), and a trace of
thousands of spans is hard to read. Its other phases (``create``, ``boot`` and ``import`` for
the inputs its machines were created with, ``run``, ``retry``) stay spans.

The call's span is the parent the machine is given (its W3C ``traceparent`` travels in the call
envelope), so spans the function makes on the machine join the call's trace.

Everything here runs only once tracing is on (`flyjobs._trace.provider.tracer`); the spans are
made with the tracer's API alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .provider import tracer as current_tracer

__all__ = ("BatchTrace", "CallTrace", "start_batch", "start_call")

#: Characters of a failure kept as a retry's ``flyjobs.retry.reason``.
_REASON_CHARS = 500


def _ns(unix_s: float) -> int:
    return int(unix_s * 1e9)


class CallTrace:
    """One call's span (see the module docstring); made by `start_call` or `BatchTrace.call`.

    :ivar traceparent: the W3C ``traceparent`` of the call's span, sent to its machines.
    """

    __slots__ = (
        "_attributes",
        "_context",
        "_cost_usd",
        "_in_map",
        "_last_end",
        "_opened",
        "_span",
        "_start",
        "_tracer",
        "traceparent",
    )

    def __init__(
        self, tracer: Any, span: Any, start_s: float, image: str, *, in_map: bool = False
    ) -> None:
        # The API is imported already: the tracer that made the span comes from it.
        from opentelemetry.trace import set_span_in_context

        self._tracer = tracer
        self._span = span
        #: the context whose current span is the call's: its phases' parent
        self._context = set_span_in_context(span)
        self._start = start_s
        #: an input of a map: its queued and deliver phases are attributes, not spans
        self._in_map = in_map
        #: when the last attempt ended, why, and on which machine (for the retry that follows)
        self._last_end: tuple[float, str, str] | None = None
        self._cost_usd: float | None = None
        #: the last attempt started
        self._opened = 0
        self._attributes: dict[str, Any] = {"flyjobs.image": image}
        context = span.get_span_context()
        flags = int(context.trace_flags)
        self.traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"

    def _phase(
        self, name: str, start_s: float, end_s: float, attributes: Mapping[str, Any]
    ) -> None:
        span = self._tracer.start_span(
            name,
            context=self._context,
            start_time=_ns(start_s),
            attributes=attributes,
        )
        span.end(end_time=_ns(max(end_s, start_s)))

    def attempt_opened(self, number: int, at_s: float) -> None:
        """Attempt ``number`` (1 for the first) starts at ``at_s`` (unix s): the call's
        ``queued`` phase ends, or the ``retry`` after the previous attempt does. An attempt
        started again (its create was throttled, its clocks restarted) ends neither again."""
        if number <= self._opened:
            return
        self._opened = number
        if number <= 1:
            if self._in_map:
                self._attributes["flyjobs.queued_s"] = max(at_s - self._start, 0.0)
            else:
                self._phase("queued", self._start, at_s, {"flyjobs.attempt": 1})
        elif self._last_end is not None:
            since, why, machine_id = self._last_end
            self._last_end = None
            attributes = {
                "flyjobs.attempt": number,
                "flyjobs.retry.reason": why,
                "flyjobs.machine_id": machine_id,
            }
            self._phase("retry", since, at_s, attributes)

    def attempt_ended(
        self,
        number: int,
        *,
        opened_s: float,
        end_s: float,
        machine_id: str,
        region: str | None,
        created: tuple[float, float] | None,
        timings: Mapping[str, float] | None,
        failed: str | None,
        exit_code: int | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Attempt ``number`` ended at ``end_s`` (unix s) on machine ``machine_id``.

        :param opened_s: when the attempt started (its clocks).
        :param created: (create request, API answer) of its machine, when the machine was
            created carrying this attempt.
        :param timings: what the worker reported with the result (None: no result came).
        :param failed: why the attempt failed (a type and message), if it did.
        :param exit_code: the machine's exit code, when the attempt ended with its exit.
        :param cost_usd: what the attempt cost, when known.
        """

        def within(t: float) -> float:
            return min(max(t, opened_s), end_s)

        # Phases carry only the attempt: each attribute costs the SDK time, per span.
        attempt = {"flyjobs.attempt": number}
        times = timings or {}
        booted = None
        if created is not None:
            # A machine may start before the create's answer is in (a fast local one): its
            # create then ends as it starts, and its boot takes no time.
            sent, booted = created
            started = times.get("worker_start")
            if started is not None:
                booted = min(booted, max(started, sent))
            self._phase("create", within(sent), within(booted), attempt)
        delivered = times.get("deliver_start") if timings is not None else None
        marks = [
            ("boot", booted, times.get("worker_start")),
            ("import", times.get("import_start"), times.get("import_end")),
            ("run", times.get("function_start"), times.get("function_end")),
        ]
        for name, start, end in marks:
            if start is not None and end is not None:
                self._phase(name, within(start), within(end), attempt)
        if delivered is not None:
            if self._in_map:
                self._attributes["flyjobs.deliver_s"] = end_s - within(delivered)
            else:
                self._phase("deliver", within(delivered), end_s, attempt)
        self._attributes.update(attempt)
        self._attributes["flyjobs.machine_id"] = machine_id
        self._attributes["flyjobs.region"] = region or ""
        self._attributes.pop("flyjobs.exit_code", None)  # an earlier attempt's
        if exit_code is not None:
            self._attributes["flyjobs.exit_code"] = exit_code
        if failed is not None:
            self._last_end = (end_s, failed[:_REASON_CHARS], machine_id)
        if cost_usd is not None:
            self.add_cost(cost_usd)

    def add_cost(self, usd: float) -> None:
        """Add ``usd`` (an attempt's cost) to the call's ``flyjobs.cost_usd``."""
        self._cost_usd = (self._cost_usd or 0.0) + usd

    def end(self, error: BaseException | None = None) -> None:
        """End the call's span now, failed with ``error`` if given."""
        if self._cost_usd is not None:
            self._attributes["flyjobs.cost_usd"] = self._cost_usd
        self._span.set_attributes(self._attributes)
        if error is not None:
            from opentelemetry.trace import StatusCode  # the API: imported by the tracer's maker

            self._span.record_exception(error)
            self._span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
        self._span.end()


def start_call(
    fn_ref: str, call_id: str, image: str, *, start_s: float, parent: Any = None
) -> CallTrace | None:
    """The span of one call of ``fn_ref`` started at ``start_s`` (unix s), or None when tracing
    is off. Its parent is ``parent`` (an OpenTelemetry context), else the current span of the
    calling thread (the app's span around the call)."""
    tracer = current_tracer()
    if tracer is None:
        return None
    return _call(tracer, fn_ref, call_id, image, start_s, parent)


def _call(
    tracer: Any,
    fn_ref: str,
    call_id: str,
    image: str,
    start_s: float,
    parent: Any,
    *,
    in_map: bool = False,
) -> CallTrace:
    attributes = {"flyjobs.function": fn_ref, "flyjobs.call_id": call_id}
    span = tracer.start_span(
        "flyjobs.call", context=parent, start_time=_ns(start_s), attributes=attributes
    )
    return CallTrace(tracer, span, start_s, image, in_map=in_map)


class BatchTrace:
    """A map's span, and each of its inputs' call spans under it (by input index)."""

    __slots__ = ("_calls", "_context", "_fn_ref", "_image", "_span", "_tracer")

    def __init__(self, tracer: Any, span: Any, fn_ref: str, image: str) -> None:
        from opentelemetry.trace import set_span_in_context  # the API: tracing is on

        self._tracer = tracer
        self._span = span
        #: the context whose current span is the map's: its inputs' calls' parent
        self._context = set_span_in_context(span)
        self._fn_ref = fn_ref
        self._image = image
        self._calls: dict[int, CallTrace] = {}

    def call(self, index: int, call_id: str, queued_s: float) -> CallTrace:
        """Input ``index``'s call span (made at its first attempt, starting when it was read
        at ``queued_s``, unix s; its queued and deliver phases are attributes, see the module
        docstring)."""
        trace = self._calls.get(index)
        if trace is None:
            trace = _call(
                self._tracer,
                self._fn_ref,
                call_id,
                self._image,
                queued_s,
                self._context,
                in_map=True,
            )
            self._calls[index] = trace
        return trace

    def settled(self, index: int, error: BaseException | None = None) -> None:
        """Input ``index`` has its outcome: end its call span."""
        trace = self._calls.pop(index, None)
        if trace is not None:
            trace.end(error)

    def end(self, error: BaseException | None = None) -> None:
        """The map is over: end the spans of inputs left without an outcome (cancelled), then
        the map's."""
        from opentelemetry.trace import StatusCode  # the API: tracing is on

        for trace in self._calls.values():
            trace.end(None)
        self._calls.clear()
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
        self._span.end()


def start_batch(fn_ref: str, batch_id: str, image: str) -> BatchTrace | None:
    """A map's span (parent: the calling thread's current span), or None when tracing is off."""
    tracer = current_tracer()
    if tracer is None:
        return None
    attributes = {"flyjobs.function": fn_ref, "flyjobs.batch_id": batch_id}
    span = tracer.start_span("flyjobs.map", attributes=attributes)
    return BatchTrace(tracer, span, fn_ref, image)
