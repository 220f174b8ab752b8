"""Tracing's overhead on a fan-out map: baseline (another git ref's flyjobs, default ``main``)
vs tracing off vs tracing on (OpenTelemetry's SDK, an in-memory exporter).

Each side runs ``noop.map`` over N trivial inputs on the embedded emulator (as bench/fanout.py's
reuse-on figure does), or, with ``--run-ms M``, ``sleep_s.map`` over N inputs that each run for
M milliseconds:

- **baseline**: the flyjobs of ``--baseline`` (``git archive`` of it, first on ``PYTHONPATH``, for
  the caller and its machines), with no tracing code at all, in processes of its own;
- **off** and **on**: this tree, in other processes, their maps taken in turn (off, on, off, ...)
  in each: off with no tracer provider set and no ``OTEL_*`` variable, on with one whose spans
  go through a ``SimpleSpanProcessor`` (each exported as it ends, on the thread that ends it) to
  an in-memory exporter.

Each tree process then times as many maps again with the same provider wrapped in
``bench/_timed_tracer.py``, which counts the CPU seconds spent inside the OpenTelemetry SDK's tracer
and spans: ``sdk_s_per_on_map``, and ``sdk_floor_vs_off_ratio``, what ``on_vs_off_ratio`` would
be if nothing but the SDK's own work on flyjobs's spans cost anything (off's map time plus those
seconds, over off's). That is the floor of any tracing that makes these spans in this process.

Baseline and tree processes alternate, round after round, so that load on the box falls on
both alike. Figures: ``off_vs_baseline_ratio`` (goal <= 1.05) and ``on_vs_off_ratio`` (goal <=
1.2; off and on maps of the same processes), and ``on_vs_baseline_ratio``, each a ratio of the
sides' median map times; the same as ``*_loop_cpu_ratio`` of the CPU time of the runtime's
event-loop thread, which runs the batch (and makes the spans), and is less at the mercy of
other load on the box than wall time is.

    python bench/trace.py [--inputs 1000] [--run-ms 0] [--maps 3] [--rounds 3] [--baseline main]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIDES = ("baseline", "off", "on")
PROCESSES = ("baseline", "tree")


#: This process's tracer provider and its exporter, made once: a provider lives until exit
#: (its shutdown is registered with atexit), so one is made per process, not per map.
_made: tuple[Any, Any] | None = None


def _tracing(on: bool, timed: bool = False) -> Any:
    """Set (``on``) or unset the process's tracer provider; its in-memory exporter, emptied,
    if set. ``timed``: the provider set is wrapped in a `TimedProvider` (returned with the
    exporter)."""
    global _made
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    # Set once per process by design: unset as OpenTelemetry's own tests do.
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    if not on:
        return None
    if _made is None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _made = (provider, exporter)
    provider, exporter = _made
    exporter.clear()
    if timed:
        from _timed_tracer import TimedProvider

        wrapped = TimedProvider(provider)
        trace.set_tracer_provider(wrapped)
        return exporter, wrapped
    trace.set_tracer_provider(provider)
    return exporter


def child(side: str, inputs: int, maps: int, run_ms: float) -> None:
    """One process: warm up, then time ``maps`` maps (of the baseline; or off and on in turn);
    print the times as JSON."""
    sys.path.insert(0, str(HERE))
    import _common  # noqa: F401  (sets up the environment first)
    from _trivial import noop, sleep_s

    import flyjobs
    from flyjobs._calls.runtime import get_runtime

    def one_map(count: int) -> None:
        if run_ms:
            run_s = [run_ms / 1000] * count
            assert list(sleep_s.map(run_s)) == run_s
        else:
            assert list(noop.map(range(count))) == list(range(count))

    one_map(16)  # warm-up: runtime, emulator, zygote
    runtime = get_runtime()

    async def loop_cpu_s() -> float:
        return time.thread_time()  # of the runtime's loop thread, where the spans are made

    times: dict[str, list[float]] = {"baseline": [], "off": [], "on": []}
    cpu: dict[str, list[float]] = {"baseline": [], "off": [], "on": []}
    spans = 0
    for _ in range(maps):
        for each in ("baseline",) if side == "baseline" else ("off", "on"):
            exporter = None if each == "baseline" else _tracing(each == "on")
            cpu_before = runtime.portal.call(loop_cpu_s)
            started = time.perf_counter()
            one_map(inputs)
            times[each].append(time.perf_counter() - started)
            cpu[each].append(runtime.portal.call(loop_cpu_s) - cpu_before)
            if exporter is not None:
                spans = len(exporter.get_finished_spans())
                exporter.clear()
    sdk: list[float] = []
    if side != "baseline":
        exporter, timed = _tracing(True, timed=True)
        for _ in range(maps):
            timed.reset()
            one_map(inputs)
            sdk.append(timed.reset())
            exporter.clear()
    found = {
        "times": times,
        "cpu": cpu,
        "sdk": sdk,
        "spans": spans,
        "flyjobs": flyjobs.__file__,
    }
    print(json.dumps(found))


def run_side(
    side: str, inputs: int, maps: int, run_ms: float, baseline_tree: str
) -> dict[str, Any]:
    """Run one ``side`` process (``baseline`` or ``tree``); its times and span count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if side == "baseline":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline_tree, env.get("PYTHONPATH")]))
    argv = [sys.executable, __file__, "--child", side, "--inputs", str(inputs)]
    argv += ["--run-ms", str(run_ms)]
    done = subprocess.run(
        [*argv, "--maps", str(maps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if (side == "baseline") != result["flyjobs"].startswith(baseline_tree):
        raise SystemExit(f"the {side} side ran the wrong flyjobs: {result['flyjobs']}")
    return result


def extract(ref: str, into: str) -> None:
    """``ref``'s flyjobs package under ``into`` (from ``git archive``)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "flyjobs"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"cannot read {ref!r} from git: {archive.stderr.decode()[-500:]}")
    subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument(
        "--run-ms", type=float, default=0.0, help="each input's run time (0: a trivial function)"
    )
    parser.add_argument("--maps", type=int, default=3, help="maps timed per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes of each kind")
    parser.add_argument("--baseline", default="main", help="git ref of the baseline")
    parser.add_argument("--child", choices=PROCESSES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.inputs, args.maps, args.run_ms)
        return
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    sdk: list[float] = []
    spans = 0
    with tempfile.TemporaryDirectory(prefix="flyjobs-bench-baseline-") as tree:
        extract(args.baseline, tree)
        for round_ in range(args.rounds):
            # The order turns each round, so neither side always runs first.
            for side in ("baseline", "tree") if round_ % 2 == 0 else ("tree", "baseline"):
                result = run_side(side, args.inputs, args.maps, args.run_ms, tree)
                for each, values in result["times"].items():
                    times[each] += values
                    cpu[each] += result["cpu"][each]
                    if values:
                        shown = " ".join(f"{t:.2f}" for t in values)
                        print(f"round {round_ + 1} {each:8} {shown}")
                spans = max(spans, int(result["spans"]))
                sdk += result["sdk"]
                if result["sdk"]:
                    shown = " ".join(f"{t:.3f}" for t in result["sdk"])
                    print(f"round {round_ + 1} sdk      {shown} (seconds in the SDK per map)")
    median = {side: statistics.median(values) for side, values in times.items()}
    sdk_s = statistics.median(sdk)
    cpu_median = {side: statistics.median(values) for side, values in cpu.items()}
    for side in SIDES:
        print(f"{side:8} median {median[side]:.3f} s per map of {args.inputs} inputs")
    figures = {
        "inputs": args.inputs,
        "run_ms": args.run_ms,
        "maps_per_side": len(times["off"]),
        "baseline": args.baseline,
        "baseline_map_s": round(median["baseline"], 3),
        "off_map_s": round(median["off"], 3),
        "on_map_s": round(median["on"], 3),
        "spans_per_on_map": spans,
        "off_vs_baseline_ratio": round(median["off"] / median["baseline"], 3),
        "on_vs_baseline_ratio": round(median["on"] / median["baseline"], 3),
        "on_vs_off_ratio": round(median["on"] / median["off"], 3),
        "sdk_s_per_on_map": round(sdk_s, 3),
        "sdk_floor_vs_off_ratio": round((median["off"] + sdk_s) / median["off"], 3),
        "baseline_loop_cpu_s": round(cpu_median["baseline"], 3),
        "off_loop_cpu_s": round(cpu_median["off"], 3),
        "on_loop_cpu_s": round(cpu_median["on"], 3),
        "off_vs_baseline_loop_cpu_ratio": round(cpu_median["off"] / cpu_median["baseline"], 3),
        "on_vs_off_loop_cpu_ratio": round(cpu_median["on"] / cpu_median["off"], 3),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
