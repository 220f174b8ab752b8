"""A trivial remote call through flyjobs, against the same machine lifecycle done by hand.

Both run on one embedded emulator, alternating, N times each:

- ``flyjobs``: ``noop.remote(i)``: encode, create the machine (payload in ``files``), the worker
  runs and PUTs its result to the inbox, wait for the exit, decode.
- ``bare``: the same create → wait(stopped/destroyed) with the flyjobs client and no flyjobs
  call machinery, the machine running ``python -c "import msgpack"``, the floor of any worker.

Goal: ``call_ratio`` (median flyjobs / median bare) <= 1.2. Then the worker's own wall time is
measured as in ``bench/worker.py`` (goal ``worker_ratio`` <= 1.5).

    python bench/remote.py [--runs 30]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
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

from flyjobs._calls.runtime import get_runtime, shutdown_runtime  # noqa: E402

CALL_GOAL = 1.2


def _timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def bench_calls(runs: int) -> dict[str, float]:
    runtime = get_runtime()
    config = bare_config(runtime)
    samples: dict[str, list[float]] = {"flyjobs": [], "bare": []}
    for i in range(3):  # warm-up: connections, bytecode and page caches
        noop.remote(i)
        runtime.portal.call(bare_lifecycle, runtime, config)
    for i in range(runs):
        samples["flyjobs"].append(_timed(lambda i=i: noop.remote(i)))
        samples["bare"].append(_timed(lambda: runtime.portal.call(bare_lifecycle, runtime, config)))
    shutdown_runtime()
    medians = {name: statistics.median(v) * 1000 for name, v in samples.items()}
    return {
        "call_ms": round(medians["flyjobs"], 2),
        "bare_lifecycle_ms": round(medians["bare"], 2),
        "call_ratio": round(medians["flyjobs"] / medians["bare"], 3),
        "goal_call_ratio_max": CALL_GOAL,
    }


def bench_worker(runs: int) -> dict[str, float]:
    spec = importlib.util.spec_from_file_location("bench_worker", HERE / "worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result: dict[str, float] = anyio.run(module._bench, runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    result = {**bench_calls(runs), **bench_worker(runs), "runs": runs}
    print(
        f"call {result['call_ms']} ms vs bare lifecycle {result['bare_lifecycle_ms']} ms;"
        f" worker {result['worker_ms']} ms vs python -c 'import msgpack' {result['baseline_ms']} ms"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
