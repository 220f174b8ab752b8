"""Warm pools: call-to-result latency of an application's steady trickle of calls.

An asyncio app issues ``--calls`` (100) calls of a 50 ms function at ``--rate`` (5) per second,
each with ``await fn.remote.aio(...)``, on the emulator's Fly profile (a standalone
``flyjobs dev --rate-limits --boot-delay-s 0.3``, client pacing ``fly``: creates at about
1/s with a burst of 3, 300 ms boots). Side by side in one run:

- **Pool**: the function with ``pool=flyjobs.Pool(max=8)``;
- **Per call**: the same function with one machine per call (the baseline; it queues behind
  the create limit, since calls arrive faster than machines can be created).

Reported: p50 and p95 latency of each, the pool's p50 once warm (calls after the first
``--warmup``), and the pool's ratios to the baseline. Goals: pool p50 <= 100 ms once warm,
p95 <= 1.5 s including growth.

    python bench/pool.py [--calls 100] [--rate 5] [--max 8] [--max-concurrency 1] [--warmup 20]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402,F401  (sets up the environment first)
from _trivial import sleep_s  # noqa: E402
from fanout import FLY_BOOT_S, FLY_CREATE_PER_S, _create_app, standalone_emulator  # noqa: E402

import flyjobs  # noqa: E402
from flyjobs._calls.runtime import get_runtime, shutdown_runtime  # noqa: E402

RUN_S = 0.05


async def _app(fn: flyjobs.Function[[float], float], calls: int, rate: float) -> list[float]:
    """Issue ``calls`` calls at ``rate`` per second; each call's seconds from call to result."""
    latencies = [0.0] * calls

    async def one(index: int) -> None:
        started = time.perf_counter()
        assert await fn.remote.aio(RUN_S) == RUN_S
        latencies[index] = time.perf_counter() - started

    begin = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for index in range(calls):
            await asyncio.sleep(max(begin + index / rate - time.perf_counter(), 0.0))
            tg.create_task(one(index))
    return latencies


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run(
    calls: int, rate: float, max_machines: int, max_concurrency: int
) -> tuple[list[float], list[float]]:
    """(pool latencies, per-call latencies) on the Fly profile."""
    with standalone_emulator("--rate-limits", "--boot-delay-s", str(FLY_BOOT_S)) as settings:
        _create_app(settings)
        os.environ.update(settings, FLYJOBS_RATE_LIMITS="fly")
        shutdown_runtime()
        try:
            get_runtime()
            # One machine per call queues behind the create limit, and a create's wait counts
            # against its call's timeout: a timeout that outlasts the queue, for both runs.
            fn = sleep_s.with_options(timeout_s=calls / FLY_CREATE_PER_S + 60)
            pool = flyjobs.Pool(max=max_machines, max_concurrency=max_concurrency, idle_s=30)
            pooled = asyncio.run(_app(fn.with_options(pool=pool), calls, rate))
            pool.shutdown()
            per_call = asyncio.run(_app(fn, calls, rate))
        finally:
            shutdown_runtime()
            for name in [*settings, "FLYJOBS_RATE_LIMITS"]:
                os.environ.pop(name, None)
    return pooled, per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--max", type=int, default=8)
    parser.add_argument("--max-concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    pooled, per_call = run(args.calls, args.rate, args.max, args.max_concurrency)
    warm = pooled[args.warmup :]
    figures = {
        "pool_p50_s": _p(pooled, 50),
        "pool_p95_s": _p(pooled, 95),
        "pool_warm_p50_s": _p(warm, 50),
        "per_call_p50_s": _p(per_call, 50),
        "per_call_p95_s": _p(per_call, 95),
    }
    print(
        f"{args.calls} calls of a {RUN_S * 1000:.0f} ms function at {args.rate:g}/s, Fly profile"
        f" (creates ~1/s burst 3, {FLY_BOOT_S} s boot):"
    )
    print(
        f"  Pool(max={args.max}, max_concurrency={args.max_concurrency}):"
        f" p50 {figures['pool_p50_s'] * 1000:.0f} ms,"
        f" p95 {figures['pool_p95_s'] * 1000:.0f} ms, p50 after the first {args.warmup} calls"
        f" {figures['pool_warm_p50_s'] * 1000:.0f} ms, max {max(pooled) * 1000:.0f} ms"
    )
    print(
        f"  one machine per call: p50 {figures['per_call_p50_s'] * 1000:.0f} ms,"
        f" p95 {figures['per_call_p95_s'] * 1000:.0f} ms, max {max(per_call) * 1000:.0f} ms"
    )
    result = {
        "calls": args.calls,
        "rate_per_s": args.rate,
        "run_s": RUN_S,
        "pool_max": args.max,
        "pool_max_concurrency": args.max_concurrency,
        **{name: round(value, 4) for name, value in figures.items()},
        "pool_vs_per_call_p50_ratio": round(figures["pool_p50_s"] / figures["per_call_p50_s"], 4),
        "pool_vs_per_call_p95_ratio": round(figures["pool_p95_s"] / figures["per_call_p95_s"], 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
