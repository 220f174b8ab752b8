"""Wall time of the worker running one trivial call end to end, against a bare interpreter.

Each worker run is a whole ``python -m flyjobs.worker`` process: start, read the payload, import
the function, run it, PUT the result (sealed with the result key, as on every machine) to a real
`ResultInbox` (served by this process on 127.0.0.1), exit. The baseline is ``python -c "import
msgpack"`` as a whole process, started the same way. Runs alternate, and the medians of each are
compared; goal: worker_ratio <= 1.5.

Bytecode is cached for both (in a temporary PYTHONPYCACHEPREFIX), as it is in a worker image
where pip compiled flyjobs at install time; `worker_uncached_ms` is the same run compiling
flyjobs' modules from source each time (PYTHONDONTWRITEBYTECODE with no cache).

    python bench/worker.py [--runs 30]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from flyjobs._results.inbox import ResultInbox
from flyjobs._wire.call_envelope import encode_call
from flyjobs._wire.machine import MACHINE_ROOT_ENV, PAYLOAD_GUEST_PATH
from flyjobs._wire.seal import RESULT_KEY_ENV

REPO = Path(__file__).resolve().parent.parent
GOAL_RATIO = 1.5
#: The worker seals its result with the app's result key, as on every machine.
RESULT_KEY = "bench-result-key"


async def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    # cwd: `python -m` puts it first on sys.path; a machine runs in its own work dir too.
    process = await anyio.run_process(command, env=env, cwd=env[MACHINE_ROOT_ENV], check=False)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command} exited {process.returncode}: {process.stderr.decode()}")
    return elapsed


async def _worker_run(inbox: ResultInbox, root: Path, env: dict[str, str], n: int) -> float:
    call_id = f"bench-{n}"
    with inbox.expect(call_id, ttl_s=60) as ticket:
        payload = root / PAYLOAD_GUEST_PATH.lstrip("/")
        payload.write_bytes(
            encode_call(
                "benchfuncs:noop",
                (n,),
                call_id=call_id,
                deadline=time.time() + 60,
                result_url=ticket.url,
                sys_path=[str(root)],
            )
        )
        elapsed = await _timed([sys.executable, "-m", "flyjobs.worker"], env)
        if not ticket.delivered:
            raise RuntimeError("the worker exited 0 without a delivered result")
        return elapsed


def _environments(root: Path, cache: Path) -> tuple[dict[str, str], dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base.pop("PYTHONPYCACHEPREFIX", None)
    base["PYTHONPATH"] = str(REPO)
    base[MACHINE_ROOT_ENV] = str(root)
    base[RESULT_KEY_ENV] = RESULT_KEY
    cached = {**base, "PYTHONPYCACHEPREFIX": str(cache)}
    # The installed packages keep their __pycache__; only flyjobs compiles from source.
    uncached = {**base, "PYTHONDONTWRITEBYTECODE": "1"}
    uncached.pop("PYTHONPYCACHEPREFIX", None)
    return cached, uncached


async def _bench(runs: int) -> dict[str, float]:
    baseline_cmd = [sys.executable, "-c", "import msgpack"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / PAYLOAD_GUEST_PATH.lstrip("/")).parent.mkdir(parents=True)
        (root / "benchfuncs.py").write_text("def noop(x):\n    return x\n")
        cached, uncached = _environments(root, root / "pycache")
        samples: dict[str, list[float]] = {"baseline": [], "worker": [], "uncached": []}
        async with ResultInbox(result_key=RESULT_KEY) as inbox:
            for n in range(3):  # warm-up: fills the bytecode cache and the page cache
                await _worker_run(inbox, root, cached, -1 - n)
                await _timed(baseline_cmd, cached)
            for n in range(runs):
                samples["baseline"].append(await _timed(baseline_cmd, cached))
                samples["worker"].append(await _worker_run(inbox, root, cached, n))
                samples["uncached"].append(await _worker_run(inbox, root, uncached, runs + n))
    medians = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    return {
        "baseline_ms": round(medians["baseline"], 2),
        "worker_ms": round(medians["worker"], 2),
        "worker_uncached_ms": round(medians["uncached"], 2),
        "worker_ratio": round(medians["worker"] / medians["baseline"], 3),
        "goal_worker_ratio_max": GOAL_RATIO,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    result = anyio.run(_bench, parser.parse_args().runs)
    print(
        f"worker {result['worker_ms']} ms vs python -c 'import msgpack' {result['baseline_ms']} ms"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
