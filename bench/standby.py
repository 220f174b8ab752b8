"""Standby machines: a map's full width at once, against a map that creates its machines.

On the emulator's Fly profile (a standalone ``flyjobs dev --rate-limits --boot-delay-s 0.3``,
client pacing ``fly``), 640 one-second inputs on 64 machines, run twice in this process:

- **Standbys**: 64 standby machines made beforehand (``flyjobs standby create``, not timed),
  then ``sleep_s.map(..., max_machines=64, standby=True)``: every standby is started at once
  (starts and updates are limited per machine), so the makespan should be near the ideal of
  64 machines started at once: a 0.3 s boot, then 10 rounds of 1 s
  (``standby_vs_ideal_ratio``, goal <= 1.2).
- **Creates only**: the same map with ``standby=False``, its machines created at Fly's create
  rate (burst 3, then 1/s); ``creates_vs_standby_ratio`` is its makespan over the standby run's.

    python bench/standby.py [--inputs 640] [--machines 64]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402,F401  (sets up the environment first)
from _trivial import sleep_s  # noqa: E402
from fanout import FLY_BOOT_S, _create_app, standalone_emulator  # noqa: E402

from flyjobs._calls.runtime import get_runtime, shutdown_runtime  # noqa: E402
from flyjobs._standby.fleet import create_standbys  # noqa: E402

RUN_S = 1.0


def make_standbys(count: int) -> float:
    """Create ``count`` standbys of ``sleep_s``'s shape on the runtime's API; return seconds."""
    runtime = get_runtime()
    app, image = runtime.app, runtime.image
    assert app is not None and image is not None
    options = sleep_s.options.merged(runtime.settings.defaults)
    started = time.perf_counter()

    async def make() -> None:
        await create_standbys(runtime.client, app, options, image=image, count=count)

    runtime.call(make)
    return time.perf_counter() - started


def makespan_s(inputs: int, machines: int, *, standby: bool) -> float:
    started = time.perf_counter()
    values = list(sleep_s.map([RUN_S] * inputs, max_machines=machines, standby=standby))
    elapsed = time.perf_counter() - started
    assert values == [RUN_S] * inputs
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=640)
    parser.add_argument("--machines", type=int, default=64)
    args = parser.parse_args()
    with standalone_emulator("--rate-limits", "--boot-delay-s", str(FLY_BOOT_S)) as settings:
        _create_app(settings)
        os.environ.update(settings, FLYJOBS_RATE_LIMITS="fly")
        shutdown_runtime()
        try:
            setup_s = make_standbys(args.machines)
            print(f"{args.machines} standbys created in {setup_s:.1f} s (not timed below)")
            standby_s = makespan_s(args.inputs, args.machines, standby=True)
            anyio.run(anyio.sleep, 3.0)  # the app's create bucket full again, as on a fresh map
            creates_s = makespan_s(args.inputs, args.machines, standby=False)
        finally:
            shutdown_runtime()
    rounds = -(-args.inputs // args.machines)
    ideal = FLY_BOOT_S + rounds * RUN_S
    print(
        f"{args.inputs} one-second inputs on {args.machines} machines (Fly profile):"
        f" standbys {standby_s:.2f} s, creates only {creates_s:.2f} s,"
        f" ideal {ideal:.2f} s ({FLY_BOOT_S} s boot + {rounds} rounds of {RUN_S:g} s)"
    )
    print(
        json.dumps(
            {
                "inputs": args.inputs,
                "machines": args.machines,
                "standby_makespan_s": round(standby_s, 3),
                "creates_makespan_s": round(creates_s, 3),
                "ideal_s": round(ideal, 3),
                "standby_vs_ideal_ratio": round(standby_s / ideal, 3),
                "creates_vs_standby_ratio": round(creates_s / standby_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
