"""Fan-out: ``fn.map`` at scale against its floors, and the client's cost per input.

Four figures, side by side in one run:

- **Reuse on** (``map_vs_floor_ratio``, goal <= 0.1, issue 20): N trivial inputs through
  ``noop.map`` on the embedded emulator, against the floor of spawning the worker's floor
  command (``python -c "import msgpack"``) N times at the same concurrency (``max_machines``).
  A batch machine takes many inputs, several per round trip, so the map should beat even that
  floor by far.
- **Reuse off** (``map_no_reuse_vs_floor_ratio``, goal <= 1.3): the same with ``reuse=False``
  (one machine per input, as ``.remote()`` runs). The emulator forks worker machines from a
  pre-started interpreter (``flyjobs._machine_side.zygote``); ``map_no_reuse_fresh_vs_floor_ratio``
  is the same map on an emulator in this process with that off (``fork_server=False``: every machine
  a fresh interpreter, as the floor's are), for comparison.
- **Fly profile** (``fly_makespan_vs_ideal_ratio``, goal <= 1.3): a standalone
  ``flyjobs dev --rate-limits --boot-delay-s 0.3``, client pacing ``fly``, 60 one-second inputs
  at ``max_machines=64``: makespan against the ideal the limits allow a pool created at the
  create rate and reused (printed, with how it is computed).
- **Slow among fast** (``slow_among_fast_vs_ideal_ratio``, goal <= 1.2, issue 20): N trivial
  inputs with one that sleeps 2 s in the middle, at ``max_machines=4``, against the slow
  input's time plus the time the fast inputs take alone on the same machines: fast inputs
  handed in a chunk behind the slow one are given back to the other machines, not held.
- **Client cost**: a client process (against a standalone emulator, so the machines and the
  API are not counted) maps 10,000 trivial inputs: its peak RSS (``client_peak_rss_mb``, goal
  <= 150), its CPU time per input (``client_cpu_ms_per_input``, goal <= 0.5:
  ``client_cpu_vs_goal_ratio``) and its throughput (``client_inputs_per_s``, goal >= 1,000:
  ``throughput_vs_goal_ratio`` is the goal over the figure, so <= 1 meets it). The same client
  with chunks of one input (as before issue 20) runs in the same bench for comparison
  (``unchunked_*``, and ``chunked_vs_unchunked_cpu_ratio``).

    python bench/fanout.py [--inputs 1000] [--rounds 1] [--fly-inputs 60] [--rss-inputs 10000]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import resource
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402,F401  (sets up the environment first)
from _trivial import noop, sleep_s, slow_at  # noqa: E402

from flyjobs._calls.runtime import get_runtime, shutdown_runtime  # noqa: E402

FLOOR_CMD = [sys.executable, "-c", "import msgpack"]
#: Fly's create limit per app: a burst of 3, then 1 per second.
FLY_CREATE_BURST = 3
FLY_CREATE_PER_S = 1.0
FLY_BOOT_S = 0.3


async def _floor(count: int, concurrency: int) -> None:
    limiter = anyio.CapacityLimiter(concurrency)

    async def one() -> None:
        async with limiter:
            await anyio.run_process(FLOOR_CMD)

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)


def floor_s(count: int, concurrency: int) -> float:
    started = time.perf_counter()
    anyio.run(_floor, count, concurrency)
    return time.perf_counter() - started


def map_s(count: int, *, reuse: bool) -> float:
    started = time.perf_counter()
    assert list(noop.map(range(count), reuse=reuse)) == list(range(count))
    return time.perf_counter() - started


def map_fresh_s(count: int) -> float:
    """`map_s` with ``reuse=False`` on an emulator in this process whose machines each start a
    fresh interpreter (no fork server), pointed at as Fly would be."""
    from flyjobs.emulator import EmulatorConfig, serve_in_thread

    token = secrets.token_urlsafe(24)
    with serve_in_thread(EmulatorConfig(tokens=[token], fork_server=False)) as emu:
        settings = {
            "FLY_API_TOKEN": token,
            "FLY_API_HOSTNAME": emu.url,
            "FLY_APP": "flyjobs-bench",
            "FLYJOBS_IMAGE": "flyjobs-bench",
            "FLYJOBS_INBOX_HOST": "127.0.0.1",
            "FLYJOBS_INBOX_BIND": "127.0.0.1",
            "FLYJOBS_RESULT_KEY": secrets.token_urlsafe(32),
        }
        _create_app(settings)
        os.environ.update(settings)
        shutdown_runtime()
        try:
            list(noop.map(range(8)))  # warm-up
            return map_s(count, reuse=False)
        finally:
            shutdown_runtime()
            for name in settings:
                os.environ.pop(name, None)


SLOW_S = 2.0
SLOW_MACHINES = 4


def slow_among_fast(count: int) -> tuple[float, float]:
    """(makespan, ideal) in seconds of ``count`` trivial inputs, one of them `SLOW_S` long:
    the ideal is `SLOW_S` plus the same inputs' makespan with none slow."""
    started = time.perf_counter()
    list(slow_at.map(range(count), [-1] * count, [0.0] * count, max_machines=SLOW_MACHINES))
    fast_s = time.perf_counter() - started
    started = time.perf_counter()
    values = list(
        slow_at.map(
            range(count), [count // 2] * count, [SLOW_S] * count, max_machines=SLOW_MACHINES
        )
    )
    makespan = time.perf_counter() - started
    assert values == list(range(count))
    return makespan, SLOW_S + fast_s


def ideal_makespan_s(inputs: int, run_s: float, max_machines: int) -> float:
    """The makespan Fly's limits allow: machine k is created at max(0, k - burst + 1) / rate
    seconds (creates start as a burst of 3, then one a second), is ready ``FLY_BOOT_S`` later,
    and takes inputs one after another; each input goes to whichever comes first, a machine
    that is free or a new one, and no machine is created once every input has one."""
    free: list[float] = []  # times at which existing machines are free
    created = 0
    end = 0.0
    for _ in range(inputs):
        next_create = max(0, created - FLY_CREATE_BURST + 1) / FLY_CREATE_PER_S + FLY_BOOT_S
        if created < max_machines and (not free or next_create < free[0]):
            start = next_create
            created += 1
        else:
            start = heapq.heappop(free)
        heapq.heappush(free, start + run_s)
        end = max(end, start + run_s)
    return end


@contextmanager
def standalone_emulator(*flags: str) -> Iterator[dict[str, str]]:
    """``flyjobs dev`` in its own process; yield the settings that point a client at it."""
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "FLYJOBS_DEV_TOKEN": token}
    cmd = [sys.executable, "-m", "flyjobs", "dev", "--port", "0", *flags]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            found = re.search(r"listening on (\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "flyjobs dev did not start"
        app = "flyjobs-bench"
        yield {
            "FLY_API_TOKEN": token,
            "FLY_API_HOSTNAME": url,
            "FLY_APP": app,
            "FLYJOBS_IMAGE": "flyjobs-bench",
            "FLYJOBS_INBOX_HOST": "127.0.0.1",
            "FLYJOBS_INBOX_BIND": "127.0.0.1",
            "FLYJOBS_RESULT_KEY": secrets.token_urlsafe(32),
        }
    finally:
        proc.terminate()
        proc.wait(30)


def _create_app(settings: dict[str, str]) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {settings['FLY_API_TOKEN']}"}
    with httpx.Client(base_url=settings["FLY_API_HOSTNAME"], headers=headers) as http:
        app = settings["FLY_APP"]
        assert http.post("/v1/apps", json={"app_name": app, "org_slug": "personal"}).is_success
        secret = {"value": settings["FLYJOBS_RESULT_KEY"]}
        assert http.post(f"/v1/apps/{app}/secrets/FLYJOBS_RESULT_KEY", json=secret).is_success


def fly_profile(inputs: int, max_machines: int) -> tuple[float, float]:
    """(makespan, ideal) in seconds of ``inputs`` one-second inputs on the Fly profile."""
    with standalone_emulator("--rate-limits", "--boot-delay-s", str(FLY_BOOT_S)) as settings:
        _create_app(settings)
        os.environ.update(settings, FLYJOBS_RATE_LIMITS="fly")
        shutdown_runtime()
        try:
            get_runtime()
            started = time.perf_counter()
            values = list(sleep_s.map([1.0] * inputs, max_machines=max_machines))
            makespan = time.perf_counter() - started
            assert values == [1.0] * inputs
        finally:
            shutdown_runtime()
            for name in [*settings, "FLYJOBS_RATE_LIMITS"]:
                os.environ.pop(name, None)
    return makespan, ideal_makespan_s(inputs, 1.0, max_machines)


#: Issue 20's goals for the client mapping 10,000 trivial inputs.
GOAL_INPUTS_PER_S = 1000.0
GOAL_CPU_MS_PER_INPUT = 0.5


def client_cost(inputs: int, *, chunks: bool = True) -> dict[str, float]:
    """Peak RSS (MB), CPU (ms per input) and elapsed time (s) of a client process mapping
    ``inputs`` inputs (``chunks=False``: one input per round trip)."""
    with standalone_emulator() as settings:
        _create_app(settings)
        # Under another name: importing _common drops FLY_API_TOKEN (the embedded emulator).
        env = {**os.environ, **settings, "FLYJOBS_BENCH_TOKEN": settings["FLY_API_TOKEN"]}
        client = subprocess.run(
            [
                sys.executable,
                __file__,
                "--client",
                str(inputs),
                *([] if chunks else ["--no-chunks"]),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if client.returncode:
            sys.exit(f"the client process failed:\n{client.stderr}")
        out = client.stdout
    measured: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return measured


def _client_main(inputs: int, *, chunks: bool) -> None:
    os.environ["FLY_API_TOKEN"] = os.environ.pop("FLYJOBS_BENCH_TOKEN")
    if not chunks:
        # The baseline: every round trip hands one input, as before chunks.
        import functools

        import flyjobs._batches.batch

        batch_module: Any = flyjobs._batches.batch
        batch_module.ChunkSize = functools.partial(batch_module.ChunkSize, max_size=1)
    started = time.perf_counter()
    count = sum(1 for _ in noop.map(range(inputs)))
    elapsed = time.perf_counter() - started
    assert count == inputs
    usage = resource.getrusage(resource.RUSAGE_SELF)
    shutdown_runtime()
    print(
        json.dumps(
            {
                "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
                "cpu_ms_per_input": (usage.ru_utime + usage.ru_stime) * 1000 / inputs,
                "elapsed_s": elapsed,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fly-inputs", type=int, default=60)
    parser.add_argument("--fly-max-machines", type=int, default=64)
    parser.add_argument("--rss-inputs", type=int, default=10_000)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-chunks", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        _client_main(args.client, chunks=not args.no_chunks)
        return
    runtime = get_runtime()
    concurrency = runtime.settings.max_machines
    list(noop.map(range(8)))  # warm-up
    samples: dict[str, list[float]] = {"reuse": [], "no_reuse": [], "floor": [], "fresh": []}
    for _ in range(args.rounds):
        samples["floor"].append(floor_s(args.inputs, concurrency))
        samples["reuse"].append(map_s(args.inputs, reuse=True))
        samples["no_reuse"].append(map_s(args.inputs, reuse=False))
    shutdown_runtime()
    for _ in range(args.rounds):
        samples["fresh"].append(map_fresh_s(args.inputs))
    reuse_s, no_reuse_s, floor, fresh_s = (statistics.median(samples[k]) for k in samples)
    print(
        f"{args.inputs} trivial inputs at {concurrency} at once: map {reuse_s:.2f} s,"
        f" map reuse=False {no_reuse_s:.2f} s (fresh interpreters: {fresh_s:.2f} s), floor"
        f" ({' '.join(FLOOR_CMD[1:])} x {args.inputs}) {floor:.2f} s"
    )
    mixed_s, mixed_ideal_s = slow_among_fast(args.inputs)
    print(
        f"{args.inputs} trivial inputs, one of them {SLOW_S:g} s, at {SLOW_MACHINES} machines:"
        f" {mixed_s:.2f} s vs ideal {mixed_ideal_s:.2f} s ({SLOW_S:g} s + the same inputs with"
        " none slow)"
    )
    makespan, ideal = fly_profile(args.fly_inputs, args.fly_max_machines)
    print(
        f"Fly profile: {args.fly_inputs} one-second inputs, max_machines={args.fly_max_machines}:"
        f" makespan {makespan:.2f} s vs ideal {ideal:.2f} s"
    )
    print(
        "  ideal: creates at Fly's limit (burst 3, then 1/s), each machine ready 0.3 s after"
        " its create, inputs handed to the first machine free (or created); no overheads"
    )
    cost = client_cost(args.rss_inputs)
    per_s = args.rss_inputs / cost["elapsed_s"]
    print(
        f"client mapping {args.rss_inputs} trivial inputs: peak RSS {cost['peak_rss_mb']:.0f} MB,"
        f" {cost['cpu_ms_per_input']:.2f} ms CPU per input, {cost['elapsed_s']:.1f} s"
        f" ({per_s:.0f} inputs/s; goals: >= {GOAL_INPUTS_PER_S:.0f}/s,"
        f" <= {GOAL_CPU_MS_PER_INPUT} ms CPU per input)"
    )
    unchunked = client_cost(args.rss_inputs, chunks=False)
    unchunked_per_s = args.rss_inputs / unchunked["elapsed_s"]
    print(
        f"  the same, one input per round trip: {unchunked['cpu_ms_per_input']:.2f} ms CPU per"
        f" input, {unchunked['elapsed_s']:.1f} s ({unchunked_per_s:.0f} inputs/s)"
    )
    result = {
        "inputs": args.inputs,
        "rounds": args.rounds,
        "max_machines": concurrency,
        "map_s": round(reuse_s, 3),
        "map_no_reuse_s": round(no_reuse_s, 3),
        "floor_s": round(floor, 3),
        "map_vs_floor_ratio": round(reuse_s / floor, 3),
        "map_no_reuse_vs_floor_ratio": round(no_reuse_s / floor, 3),
        "map_no_reuse_fresh_s": round(fresh_s, 3),
        "map_no_reuse_fresh_vs_floor_ratio": round(fresh_s / floor, 3),
        "slow_among_fast_s": round(mixed_s, 3),
        "slow_among_fast_ideal_s": round(mixed_ideal_s, 3),
        "slow_among_fast_vs_ideal_ratio": round(mixed_s / mixed_ideal_s, 3),
        "fly_inputs": args.fly_inputs,
        "fly_makespan_s": round(makespan, 3),
        "fly_ideal_s": round(ideal, 3),
        "fly_makespan_vs_ideal_ratio": round(makespan / ideal, 3),
        "rss_inputs": args.rss_inputs,
        "client_peak_rss_mb": round(cost["peak_rss_mb"], 1),
        "client_cpu_ms_per_input": round(cost["cpu_ms_per_input"], 3),
        "client_inputs_per_s": round(per_s, 1),
        "client_cpu_vs_goal_ratio": round(cost["cpu_ms_per_input"] / GOAL_CPU_MS_PER_INPUT, 3),
        "throughput_vs_goal_ratio": round(GOAL_INPUTS_PER_S / per_s, 3),
        "unchunked_cpu_ms_per_input": round(unchunked["cpu_ms_per_input"], 3),
        "unchunked_inputs_per_s": round(unchunked_per_s, 1),
        "chunked_vs_unchunked_cpu_ratio": round(
            cost["cpu_ms_per_input"] / unchunked["cpu_ms_per_input"], 3
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
