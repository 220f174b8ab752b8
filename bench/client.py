"""Overhead of flyjobs' Machines client against plain, minimal httpx calls.

Runs the same work twice per round, interleaved (the order alternates), against one local
emulator started in a separate process, so that ``time.process_time`` measures the client only:

- loop: create an ``auto_destroy`` machine running ``python -c pass`` → wait ``started`` →
  wait ``destroyed`` (3 API calls);
- get: read one running machine (1 API call), the client's cheapest round trip, where its own
  cost (model parsing, retry and rate-limit bookkeeping) weighs most.

Prints a table, then one JSON line with ``*_ratio`` values (flyjobs / plain httpx; goal ≤ 1.10)
and the client CPU time per API call. Usage: ``python bench/client.py [--machines N] [--gets N]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from flyjobs.machines import MachineConfig, MachinesClient

EMULATOR = """
import sys
from flyjobs.emulator import EmulatorConfig, serve_in_thread
with serve_in_thread(EmulatorConfig(tokens=[sys.argv[1]])) as emu:
    print(emu.url, flush=True)
    sys.stdin.read()  # serve until the benchmark closes our stdin
"""
WARMUP_ROUNDS = 3


@dataclass
class Tally:
    """Wall and CPU seconds spent by one variant, and the API calls it made."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    calls: int = 0
    samples: list[float] = field(default_factory=list)

    async def measure(self, work: Callable[[], Awaitable[int]], *, keep: bool) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        calls = await work()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if keep:
            self.wall_s += wall
            self.cpu_s += cpu
            self.calls += calls
            self.samples.append(wall)


@contextmanager
def emulator_process(token: str) -> Iterator[str]:
    """Run the emulator in its own process; yield its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", EMULATOR, token],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        url = proc.stdout.readline().strip()
        if not url:
            raise RuntimeError("the emulator process did not start")
        yield url
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def job_config() -> dict[str, Any]:
    return {
        "image": "python:3",
        "init": {"cmd": [sys.executable, "-c", "pass"]},
        "auto_destroy": True,
        "restart": {"policy": "no"},
    }


async def flyjobs_loop(fly: MachinesClient, app: str, config: MachineConfig) -> int:
    machine = await fly.create_machine(app, config)
    await fly.wait(app, machine.id, "started")
    await fly.wait(app, machine.id, "destroyed")
    return 3


async def httpx_loop(http: httpx.AsyncClient, app: str, config: dict[str, Any]) -> int:
    response = await http.post(f"/v1/apps/{app}/machines", json={"config": config})
    response.raise_for_status()
    machine_id = response.json()["id"]
    for state in ("started", "destroyed"):
        response = await http.get(
            f"/v1/apps/{app}/machines/{machine_id}/wait",
            params={"state": state, "timeout": 60},
            timeout=70,
        )
        response.raise_for_status()
    return 3


async def run(machines: int, gets: int) -> dict[str, float]:
    token = secrets.token_hex(16)
    with emulator_process(token) as url:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            MachinesClient(token, base_url=url) as fly,
            httpx.AsyncClient(base_url=url, headers=headers) as http,
        ):
            app = f"bench-{secrets.token_hex(3)}"
            await fly.create_app(app)
            raw_config = job_config()
            config = MachineConfig.model_validate(raw_config)
            loop = {"flyjobs": Tally(), "httpx": Tally()}
            variants: dict[str, Callable[[], Awaitable[int]]] = {
                "flyjobs": lambda: flyjobs_loop(fly, app, config),
                "httpx": lambda: httpx_loop(http, app, raw_config),
            }
            await interleave(variants, loop, machines)

            sleeper = MachineConfig.model_validate(
                {
                    "image": "python:3",
                    "init": {"cmd": [sys.executable, "-c", "import time; time.sleep(600)"]},
                }
            )
            async with fly.temporary_machine(app, sleeper) as machine:
                await fly.wait(app, machine.id, "started")
                path = f"/v1/apps/{app}/machines/{machine.id}"
                get = {"flyjobs": Tally(), "httpx": Tally()}
                await interleave(
                    {
                        "flyjobs": lambda: _count(fly.get_machine(app, machine.id)),
                        "httpx": lambda: _count(_raw_get(http, path)),
                    },
                    get,
                    gets,
                )
            await fly.delete_app(app, force=True)
    return report(loop, get, machines, gets)


async def interleave(
    variants: dict[str, Callable[[], Awaitable[int]]], tallies: dict[str, Tally], rounds: int
) -> None:
    names = list(variants)
    for i in range(WARMUP_ROUNDS + rounds):
        if i == WARMUP_ROUNDS:
            # Start the measured rounds with no collection pending: the first full collection
            # after start-up (some 40,000 objects of imported modules, 6-16 ms) otherwise lands
            # in whichever variant's round crosses the threshold (flyjobs's, in practice) and
            # is charged to it as if every call paid for it.
            gc.collect()
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            await tallies[name].measure(variants[name], keep=i >= WARMUP_ROUNDS)


async def _count(call: Awaitable[object]) -> int:
    await call
    return 1


async def _raw_get(http: httpx.AsyncClient, path: str) -> Any:
    response = await http.get(path)
    response.raise_for_status()
    return response.json()


def report(
    loop: dict[str, Tally], get: dict[str, Tally], machines: int, gets: int
) -> dict[str, float]:
    print(f"{'phase':<6} {'variant':<8} {'rounds':>6} {'wall ms/round':>14} {'cpu ms/call':>12}")
    for phase, tallies, rounds in (("loop", loop, machines), ("get", get, gets)):
        for name, tally in tallies.items():
            print(
                f"{phase:<6} {name:<8} {rounds:>6} {tally.wall_s / rounds * 1000:>14.2f} "
                f"{tally.cpu_s / tally.calls * 1000:>12.3f}"
            )
    fj_calls = loop["flyjobs"].calls + get["flyjobs"].calls
    raw_calls = loop["httpx"].calls + get["httpx"].calls
    return {
        "machines": machines,
        "gets": gets,
        "loop_wall_ratio": round(loop["flyjobs"].wall_s / loop["httpx"].wall_s, 3),
        "loop_cpu_ratio": round(loop["flyjobs"].cpu_s / loop["httpx"].cpu_s, 3),
        "get_wall_ratio": round(get["flyjobs"].wall_s / get["httpx"].wall_s, 3),
        "get_cpu_ratio": round(get["flyjobs"].cpu_s / get["httpx"].cpu_s, 3),
        "flyjobs_cpu_ms_per_call": round(
            (loop["flyjobs"].cpu_s + get["flyjobs"].cpu_s) / fj_calls * 1000, 3
        ),
        "httpx_cpu_ms_per_call": round(
            (loop["httpx"].cpu_s + get["httpx"].cpu_s) / raw_calls * 1000, 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=40, help="create/wait loops per variant")
    parser.add_argument("--gets", type=int, default=300, help="get_machine calls per variant")
    args = parser.parse_args()
    result = anyio.run(run, max(1, args.machines), max(1, args.gets))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
