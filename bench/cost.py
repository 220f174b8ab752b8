"""Cost accounting's overhead on a fan-out (issue 21): the same ``noop.map`` on the embedded
emulator with cost accounting (a ledger: every machine read back once it exits and billed from
its own events, each input's share, the summary's cost) and without it (no ledger), alternated
round by round in this one process.

- ``reuse_ratio`` (goal <= 1.05): N trivial inputs, machines pulling inputs (``max_machines``
  of them), with / without.
- ``no_reuse_ratio`` (goal <= 1.05): M inputs with ``reuse=False``: one machine, so one read
  back, per input (the worst case for the accounting).
- ``cost_accounting_overhead_ratio``: the larger of the two.
- ``*_cpu_ratio``: the same in this process's CPU time (the client and the embedded emulator,
  not the machines), steadier than wall time on a loaded host.

    python bench/cost.py [--inputs 1000] [--no-reuse-inputs 100] [--rounds 3]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402,F401  (sets up the environment first)
from _trivial import noop  # noqa: E402

import flyjobs._batches.map as map_module  # noqa: E402
from flyjobs._calls.runtime import get_runtime, shutdown_runtime  # noqa: E402
from flyjobs._cost.ledger import Ledger  # noqa: E402


def _without_ledger(prices: Any) -> None:
    return None  # the batch then keeps no costs: the baseline


def timed(count: int, *, reuse: bool, accounting: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one map of ``count`` inputs."""
    # The map builds its batch's ledger from this name: without it, the batch keeps no costs.
    setattr(map_module, "Ledger", Ledger if accounting else _without_ledger)  # noqa: B010
    try:
        started, cpu = time.perf_counter(), time.process_time()
        results = noop.map(range(count), reuse=reuse)
        assert list(results) == list(range(count))
        if accounting:
            # The bill is read once the map is over: counted, as the map's caller waits for it.
            assert results.summary().cost_usd > 0
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        setattr(map_module, "Ledger", Ledger)  # noqa: B010


def ratio(
    rounds: int, run: Callable[[bool], tuple[float, float]]
) -> tuple[float, float, float, float]:
    """Least wall seconds with and without accounting (alternated, the order swapped each
    round: the least is the run the loaded host disturbed least), their ratio, and the ratio
    of the least CPU seconds."""
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    for round_ in range(rounds):
        for accounting in (True, False) if round_ % 2 else (False, True):
            (on if accounting else off).append(run(accounting))
    on_s, off_s = min(w for w, _ in on), min(w for w, _ in off)
    cpu = min(c for _, c in on) / min(c for _, c in off)
    return on_s, off_s, on_s / off_s, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--no-reuse-inputs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    get_runtime()
    try:
        list(noop.map(range(8)))  # warm-up: the fork server, the inbox
        reuse_on, reuse_off, reuse, reuse_cpu = ratio(
            args.rounds, lambda on: timed(args.inputs, reuse=True, accounting=on)
        )
        print(
            f"reuse: {args.inputs} inputs {reuse_on:.2f} s with accounting,"
            f" {reuse_off:.2f} s without"
        )
        single_on, single_off, single, single_cpu = ratio(
            args.rounds,
            lambda on: timed(args.no_reuse_inputs, reuse=False, accounting=on),
        )
        print(
            f"reuse=False: {args.no_reuse_inputs} inputs {single_on:.2f} s with accounting,"
            f" {single_off:.2f} s without"
        )
    finally:
        shutdown_runtime()
    print(
        json.dumps(
            {
                "inputs": args.inputs,
                "no_reuse_inputs": args.no_reuse_inputs,
                "rounds": args.rounds,
                "reuse_with_s": round(reuse_on, 3),
                "reuse_without_s": round(reuse_off, 3),
                "reuse_ratio": round(reuse, 3),
                "reuse_cpu_ratio": round(reuse_cpu, 3),
                "no_reuse_with_s": round(single_on, 3),
                "no_reuse_without_s": round(single_off, 3),
                "no_reuse_ratio": round(single, 3),
                "no_reuse_cpu_ratio": round(single_cpu, 3),
                "cost_accounting_overhead_ratio": round(max(reuse, single), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
