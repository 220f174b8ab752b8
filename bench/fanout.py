"""Fan-out: N trivial calls through ``noop.map`` against N bare machine lifecycles, same pool.

Both run on one embedded emulator with the same bound on machines in flight (the runtime's
``max_machines``, default 64):

- ``flyjobs``: ``list(noop.map(range(N)))``: every input checked, then one machine per input,
  results delivered to the inbox, in input order.
- ``bare``: N × (create → wait stopped/destroyed) of a machine running
  ``python -c "import msgpack"``, driven with the flyjobs client under the same limiter.

``fanout_ratio`` is flyjobs wall / bare wall (runs alternate, median of each); no goal is set
yet. On the embedded emulator the emulator, the inbox and the client share one process, and its
CPU per call is what bounds a local fan-out: a flyjobs call costs that process more than a bare
lifecycle (the inbox PUT, the payload file, encoding), and httpcore's connection pool rescans
every connection at each request while dozens of ``/wait`` long-polls are open. On Fly, the
create rate limit (1/s, burst 3, per app) bounds fan-out long before either.

    python bench/fanout.py [--calls 200] [--rounds 3]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import bare_config, bare_lifecycle  # noqa: E402  (sets up the environment first)
from _trivial import noop  # noqa: E402

from flyjobs._runtime import Runtime, get_runtime, shutdown_runtime  # noqa: E402


async def _bare_fanout(runtime: Runtime, calls: int) -> None:
    config = bare_config(runtime)
    async with anyio.create_task_group() as tg:
        for _ in range(calls):

            async def one() -> None:
                async with runtime.limiter:
                    await bare_lifecycle(runtime, config)

            tg.start_soon(one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runtime = get_runtime()
    list(noop.map(range(8)))  # warm-up
    samples: dict[str, list[float]] = {"flyjobs": [], "bare": []}
    for _ in range(args.rounds):
        started = time.perf_counter()
        assert list(noop.map(range(args.calls))) == list(range(args.calls))
        samples["flyjobs"].append(time.perf_counter() - started)
        started = time.perf_counter()
        runtime.portal.call(_bare_fanout, runtime, args.calls)
        samples["bare"].append(time.perf_counter() - started)
    shutdown_runtime()
    flyjobs_s, bare_s = (statistics.median(samples[k]) for k in ("flyjobs", "bare"))
    result = {
        "calls": args.calls,
        "rounds": args.rounds,
        "max_machines": runtime.settings.max_machines,
        "fanout_s": round(flyjobs_s, 3),
        "bare_fanout_s": round(bare_s, 3),
        "calls_per_s": round(args.calls / flyjobs_s, 1),
        "fanout_ratio": round(flyjobs_s / bare_s, 3),
    }
    print(f"{args.calls} calls: map {flyjobs_s:.2f} s vs bare lifecycles {bare_s:.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
