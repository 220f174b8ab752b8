"""Traces across the machine boundary (issue 21): with OpenTelemetry configured in the caller,
each call is a span whose children are its phases (queued, create, boot, import, run, deliver,
retry), a map is one trace, and spans the function makes on the machine join the call's trace.
Without OpenTelemetry configured nothing of it is imported, here or on the machine.

The caller's spans go to an in-memory exporter; the machine's to a loopback OTLP/HTTP receiver
(`_otlp_receiver`), where the machine's ``OTEL_*`` variables (``env=``) send them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import remote_funcs
import trace_funcs
import trace_otel_funcs
from _otlp_receiver import Receiver, otlp_receiver
from _waiting import eventually
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once

import flyjobs
from flyjobs._calls.runtime import Runtime
from flyjobs._trace import provider
from flyjobs._wire.call_envelope import decode_call, encode_call

pytestmark = pytest.mark.usefixtures("no_machine_left")

PHASES = ("queued", "create", "boot", "import", "run", "deliver")
#: A map input's phase spans: its queued and deliver phases are its call span's attributes.
MAP_PHASES = ("create", "boot", "import", "run")
SUPPORT = Path(__file__).parent / "_support"


@pytest.fixture
def exporter(runtime: Runtime) -> Iterator[InMemorySpanExporter]:
    """The app's tracer provider, set for the test: its spans kept in memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    try:
        yield memory
    finally:
        provider.shutdown()
        # The global provider can be set once per process: unset it, as OpenTelemetry's own
        # tests do, so that the other tests of the session run untraced.
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as found:
        yield found


def _hex(span: ReadableSpan, *, parent: bool = False) -> str:
    context = span.parent if parent else span.context
    return "" if context is None else f"{context.span_id:016x}"


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _traceparent(span: ReadableSpan) -> str:
    assert span.context is not None
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [s for s in spans if s.name == name]
    assert len(named) == 1, [s.name for s in spans]
    return named[0]


def test_a_remote_call_is_one_trace_with_its_phases(exporter: InMemorySpanExporter) -> None:
    with trace.get_tracer("app").start_as_current_span("app") as app:
        call = trace_funcs.seen.spawn(7)
        value, loaded, traceparent = call.result()
    spans = list(exporter.get_finished_spans())
    assert {s.context.trace_id for s in spans if s.context} == {app.get_span_context().trace_id}
    span = _one(spans, "flyjobs.call")
    assert span.parent is not None and span.parent.span_id == app.get_span_context().span_id
    phases = _children(spans, span)
    assert [p.name for p in sorted(phases, key=lambda p: p.start_time or 0)] == list(PHASES)
    assert all(p.attributes and p.attributes["flyjobs.attempt"] == 1 for p in phases)
    attributes = dict(span.attributes or {})
    assert attributes["flyjobs.machine_id"] == call.machine_id
    assert attributes["flyjobs.attempt"] == 1
    assert attributes["flyjobs.image"] and attributes["flyjobs.region"]
    assert attributes["flyjobs.function"] == "trace_funcs:seen"
    assert "flyjobs.cost_usd" not in attributes  # no cost known: the attribute is absent
    # The machine was handed the call's span, and imported no OpenTelemetry for it.
    assert (value, loaded, traceparent) == (7, False, _traceparent(span))


def test_a_map_of_20_inputs_is_one_trace(exporter: InMemorySpanExporter) -> None:
    with trace.get_tracer("app").start_as_current_span("app") as app:
        results = list(trace_funcs.seen.map(range(20), max_machines=3))
    eventually(
        lambda: any(s.name == "flyjobs.map" for s in exporter.get_finished_spans()),
        "the map's span ended",
    )
    spans = list(exporter.get_finished_spans())
    assert {s.context.trace_id for s in spans if s.context} == {app.get_span_context().trace_id}
    batch = _one(spans, "flyjobs.map")
    assert batch.parent is not None and batch.parent.span_id == app.get_span_context().span_id
    calls = _children(spans, batch)
    assert len(calls) == 20 and {c.name for c in calls} == {"flyjobs.call"}
    batch_id = str((batch.attributes or {})["flyjobs.batch_id"])
    by_index = {
        int(str((c.attributes or {})["flyjobs.call_id"]).rpartition("-")[2]): c for c in calls
    }
    created = 0
    for index, value, loaded, traceparent in [(i, *r) for i, r in enumerate(results)]:
        call = by_index[index]
        assert (call.attributes or {})["flyjobs.call_id"] == f"{batch_id}-{index}"
        assert (value, loaded, traceparent) == (index, False, _traceparent(call))
        phases = sorted(_children(spans, call), key=lambda p: p.start_time or 0)
        # Inputs a machine was created with went through create, boot and import; the others
        # were handed to a running machine, which had the function imported. In a map, queued
        # and deliver are the call span's attributes, not spans.
        names = [p.name for p in phases]
        assert names in (list(MAP_PHASES), ["run"]), names
        created += names == list(MAP_PHASES)
        _check_queued_and_deliver(call, phases)
    machines = {(c.attributes or {})["flyjobs.machine_id"] for c in calls}
    assert created == len(machines) <= 3


def _check_queued_and_deliver(call: ReadableSpan, phases: list[ReadableSpan]) -> None:
    """A map input's ``flyjobs.queued_s`` is its call span's first seconds, before its first
    phase; its ``flyjobs.deliver_s`` the last ones, after its ``run``."""
    attributes = dict(call.attributes or {})
    queued_ns = float(str(attributes["flyjobs.queued_s"])) * 1e9
    deliver_ns = float(str(attributes["flyjobs.deliver_s"])) * 1e9
    assert queued_ns >= 0 and deliver_ns >= 0
    assert call.start_time is not None and call.end_time is not None
    run = phases[-1]
    assert phases[0].start_time is not None and run.end_time is not None
    slack_ns = 1_000  # the float seconds of the attributes, rounded
    assert call.start_time + queued_ns <= phases[0].start_time + slack_ns
    assert run.end_time <= call.end_time - deliver_ns + slack_ns


def test_a_function_span_on_the_machine_joins_the_call_trace(
    exporter: InMemorySpanExporter, receiver: Receiver
) -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url}
    for fn in (trace_otel_funcs.inside, trace_otel_funcs.inside_async):
        assert fn.with_options(env=env).remote(21) == 42
    assert list(trace_otel_funcs.inside.with_options(env=env).map(range(4), max_machines=2)) == [
        0,
        2,
        4,
        6,
    ]
    eventually(lambda: len(receiver.named("inside")) == 6, "the machines' spans received")
    calls = {
        _hex(s): s for s in exporter.get_finished_spans() if s.name == "flyjobs.call" and s.context
    }
    assert len(calls) == 6
    for inside in receiver.named("inside"):
        call = calls[inside.parent_id]  # a child of its call's span
        assert call.context is not None and inside.trace_id == f"{call.context.trace_id:032x}"
    by_x = {int(str(s.attributes["x"])): s.parent_id for s in receiver.named("inside")}
    for index in range(4):
        assert str((calls[by_x[index]].attributes or {})["flyjobs.call_id"]).endswith(f"-{index}")


def test_a_retried_call_shows_its_retry(exporter: InMemorySpanExporter, tmp_path: Path) -> None:
    assert trace_funcs.fails_once.remote(str(tmp_path / "marker")) == "ok"
    spans = list(exporter.get_finished_spans())
    call = _one(spans, "flyjobs.call")
    assert (call.attributes or {})["flyjobs.attempt"] == 2
    phases = sorted(_children(spans, call), key=lambda p: p.start_time or 0)
    assert [(p.name, (p.attributes or {})["flyjobs.attempt"]) for p in phases] == [
        *((name, 1) for name in PHASES),
        ("retry", 2),
        *((name, 2) for name in PHASES[1:]),
    ]
    retry = next(p for p in phases if p.name == "retry")
    assert (retry.attributes or {})["flyjobs.retry.reason"] == "ValueError: first attempt fails"
    first = next(p for p in phases if p.name == "create")
    assert (retry.attributes or {})["flyjobs.machine_id"] != (call.attributes or {})[
        "flyjobs.machine_id"
    ], "the retry names the machine that failed, the call the one that ran it"
    assert first.start_time is not None


def test_a_crashed_machine_sets_the_exit_code_and_fails_the_span(
    exporter: InMemorySpanExporter,
) -> None:
    with pytest.raises(flyjobs.MachineCrashedError):
        remote_funcs.crash.remote(3)
    call = _one(list(exporter.get_finished_spans()), "flyjobs.call")
    assert (call.attributes or {})["flyjobs.exit_code"] == 3
    assert call.status.status_code is StatusCode.ERROR
    assert [e.name for e in call.events] == ["exception"]


def test_calls_on_a_warm_pool_are_traced_too(exporter: InMemorySpanExporter) -> None:
    pool = flyjobs.Pool(max=1, idle_s=60)
    fn = trace_funcs.seen.with_options(pool=pool)
    try:
        first, second = fn.remote(1), fn.remote(2)
    finally:
        pool.shutdown()
    spans = list(exporter.get_finished_spans())
    calls = [s for s in spans if s.name == "flyjobs.call"]
    assert sorted(_traceparent(c) for c in calls) == sorted([str(first[2]), str(second[2])])
    # The second call ran on the machine the first booted: no create, boot or import.
    phases = [sorted(p.name for p in _children(spans, c)) for c in calls]
    assert sorted(phases) == [sorted(PHASES), ["deliver", "queued", "run"]]


def _caller(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new Python process on its own embedded emulator."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLY"))}
    clean["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), clean.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


_UNTRACED = """
import sys
import trace_funcs
assert tuple(trace_funcs.seen.remote(1)) == (1, False, None)
assert [r[2] for r in trace_funcs.seen.map(range(3))] == [None] * 3
print(sorted(m for m in sys.modules if m.partition(".")[0] == "opentelemetry"))
"""


def test_without_opentelemetry_configured_nothing_is_imported() -> None:
    done = _caller(_UNTRACED)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


_ENV_TRACED = """
import trace_funcs
assert trace_funcs.seen.remote(1)[0] == 1
"""


def test_the_otel_variables_alone_turn_tracing_on(receiver: Receiver) -> None:
    done = _caller(
        _ENV_TRACED,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME="trace-test",
    )
    assert done.returncode == 0, done.stderr
    # Exported by flyjobs's own provider as the process exits.
    (call,) = receiver.named("flyjobs.call")
    names = {s.name for s in receiver.spans if s.parent_id == call.span_id}
    assert names == set(PHASES)


def test_the_trace_context_travels_in_the_call_envelope() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with_trace = encode_call(
        "m:f", call_id="c", deadline=1.0, result_url="", traceparent=traceparent
    )
    assert decode_call(with_trace).traceparent == traceparent
    without = encode_call("m:f", call_id="c", deadline=1.0, result_url="")
    assert decode_call(without).traceparent is None and b"traceparent" not in without


def test_an_exporter_the_variables_name_but_is_missing_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(provider, "_own", None)
    monkeypatch.setattr(provider, "_cached", None)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "no_such_exporter")
    with caplog.at_level("WARNING", logger="flyjobs.trace"):
        assert provider.tracer() is not None
    assert "'no_such_exporter', which is not installed" in caplog.text
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert provider.tracer() is None
