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

``--case suspended`` (issue 20): bursts of calls that each arrive at a pool whose machines are
all suspended, on the same Fly profile with a 0.1 s resume (``--resume-delay-s 0.1``): ``--rounds``
(5) bursts of ``--machines`` (4) calls of the same function at once, each burst once every machine
of the pool has gone to sleep (``idle_s`` 1 s). Side by side: ``Pool(idle="suspend")``, whose
calls resume the machines, against ``Pool(idle="exit")``, whose calls create and boot new ones
(the baseline). Goals: p50 <= 250 ms and p95 <= 500 ms suspended.

    python bench/pool.py [--calls 100] [--rate 5] [--max 8] [--max-concurrency 1] [--warmup 20]
    python bench/pool.py --case suspended [--machines 4] [--rounds 5]

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
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402,F401  (sets up the environment first)
from _trivial import sleep_s  # noqa: E402
from fanout import FLY_BOOT_S, FLY_CREATE_PER_S, _create_app, standalone_emulator  # noqa: E402

import flyjobs  # noqa: E402
from flyjobs._calls.runtime import get_runtime, shutdown_runtime  # noqa: E402

RUN_S = 0.05
#: The Fly profile's resume of a suspended machine (Fly: a few hundred milliseconds).
FLY_RESUME_S = 0.1
#: Seconds a machine of the suspended case's pools stays idle before it sleeps (or exits).
IDLE_S = 1.0


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


def _pool_states(settings: dict[str, str], pool: flyjobs.Pool) -> list[str] | None:
    """The states of the pool's machines that are not destroyed (None: the API throttled the
    look)."""
    import httpx  # the client's own dependency

    headers = {"Authorization": f"Bearer {settings['FLY_API_TOKEN']}"}
    with httpx.Client(base_url=settings["FLY_API_HOSTNAME"], headers=headers) as http:
        answer = http.get(f"/v1/apps/{settings['FLY_APP']}/machines")
    if answer.status_code != 200:
        return None
    machines = answer.json()
    return [
        m["state"]
        for m in machines
        if (m.get("config") or {}).get("metadata", {}).get("flyjobs_pool") == pool.name
        and m["state"] != "destroyed"
    ]


def _until(condition: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    ends = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > ends:
            raise SystemExit(f"bench: {what} did not happen within {limit_s:g} s")
        time.sleep(0.2)


def _bursts(
    fn: flyjobs.Function[[float], float],
    pool: flyjobs.Pool,
    settings: dict[str, str],
    machines: int,
    rounds: int,
) -> list[float]:
    """Latencies of ``rounds`` bursts of ``machines`` calls, each once the pool has no machine
    awake (all suspended, or all gone)."""
    pooled = fn.with_options(pool=pool)
    asleep = ["suspended"] * machines if pool.idle == "suspend" else []

    async def burst(run_s: float) -> list[float]:
        async def one() -> float:
            started = time.perf_counter()
            assert await pooled.remote.aio(run_s) == run_s
            return time.perf_counter() - started

        tasks = [asyncio.ensure_future(one()) for _ in range(machines)]
        return list(await asyncio.gather(*tasks))

    latencies: list[float] = []
    try:
        asyncio.run(burst(1.0))  # calls long enough to need every machine at once
        for _ in range(rounds):
            _until(lambda: _pool_states(settings, pool) == asleep, f"the pool {asleep or 'gone'}")
            latencies += asyncio.run(burst(RUN_S))
    finally:
        pool.shutdown()
    return latencies


def run_suspended(machines: int, rounds: int) -> tuple[list[float], list[float]]:
    """(latencies with ``idle="suspend"``, with ``idle="exit"``) on the Fly profile."""
    flags = ("--rate-limits", "--boot-delay-s", str(FLY_BOOT_S))
    with standalone_emulator(*flags, "--resume-delay-s", str(FLY_RESUME_S)) as settings:
        _create_app(settings)
        os.environ.update(settings, FLYJOBS_RATE_LIMITS="fly")
        shutdown_runtime()
        try:
            get_runtime()
            fn = sleep_s.with_options(timeout_s=120)
            suspend = flyjobs.Pool(max=machines, idle_s=IDLE_S, idle="suspend")
            suspended = _bursts(fn, suspend, settings, machines, rounds)
            exit_ = flyjobs.Pool(max=machines, idle_s=IDLE_S)
            created = _bursts(fn, exit_, settings, machines, rounds)
        finally:
            shutdown_runtime()
            for name in [*settings, "FLYJOBS_RATE_LIMITS"]:
                os.environ.pop(name, None)
    return suspended, created


def main_suspended(machines: int, rounds: int) -> None:
    suspended, created = run_suspended(machines, rounds)
    figures = {
        "suspended_p50_s": _p(suspended, 50),
        "suspended_p95_s": _p(suspended, 95),
        "create_p50_s": _p(created, 50),
        "create_p95_s": _p(created, 95),
    }
    print(
        f"{rounds} bursts of {machines} calls of a {RUN_S * 1000:.0f} ms function, each at a pool"
        f" with no machine awake, Fly profile (creates ~1/s burst 3, {FLY_BOOT_S} s boot,"
        f" {FLY_RESUME_S} s resume):"
    )
    print(
        f"  Pool(idle='suspend'), resumed: p50 {figures['suspended_p50_s'] * 1000:.0f} ms,"
        f" p95 {figures['suspended_p95_s'] * 1000:.0f} ms (goals 250 / 500 ms),"
        f" max {max(suspended) * 1000:.0f} ms"
    )
    print(
        f"  Pool(idle='exit'), created and booted: p50 {figures['create_p50_s'] * 1000:.0f} ms,"
        f" p95 {figures['create_p95_s'] * 1000:.0f} ms, max {max(created) * 1000:.0f} ms"
    )
    result = {
        "case": "suspended",
        "machines": machines,
        "rounds": rounds,
        "run_s": RUN_S,
        "resume_delay_s": FLY_RESUME_S,
        "boot_delay_s": FLY_BOOT_S,
        **{name: round(value, 4) for name, value in figures.items()},
        "suspended_vs_create_p50_ratio": round(
            figures["suspended_p50_s"] / figures["create_p50_s"], 4
        ),
        "suspended_vs_create_p95_ratio": round(
            figures["suspended_p95_s"] / figures["create_p95_s"], 4
        ),
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("trickle", "suspended"), default="trickle")
    parser.add_argument("--machines", type=int, default=4, help="suspended case: pool size")
    parser.add_argument("--rounds", type=int, default=5, help="suspended case: bursts")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--max", type=int, default=8)
    parser.add_argument("--max-concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    if args.case == "suspended":
        main_suspended(args.machines, args.rounds)
        return
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
