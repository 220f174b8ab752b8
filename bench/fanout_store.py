"""Fan-out through the object store against the inbox: a batch from a laptop at full speed.

A caller outside Fly gets its results through the object store; its batch should run about as
fast as one whose machines reach its inbox. Both sides run in this process, one after the other,
against a standalone ``flyjobs dev --rate-limits --boot-delay-s 0.3`` (client pacing ``fly``) and
moto's S3 server (its own process) on 127.0.0.1:

- **Half-second inputs** (``store_vs_inbox_ratio``, goal <= 1.2): ``--inputs`` inputs of 0.5 s at
  ``--max-machines``; makespans and machine counts of both (the store's must stay within
  ``max_machines``), and the median time from an input's end to its result in the caller.
- **Trivial inputs** (``store_vs_inbox_trivial_ratio``, goal <= 1.5): ``--trivial`` inputs that
  return at once.

    python bench/fanout_store.py [--inputs 300] [--trivial 1000] [--max-machines 64]
        [--case sleep|trivial]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402,F401  (sets up the environment first)
import httpx  # noqa: E402
from _trivial import noop, sleep_s  # noqa: E402
from fanout import (  # noqa: E402
    FLY_BOOT_S,
    FLY_CREATE_BURST,
    FLY_CREATE_PER_S,
    _create_app,
    standalone_emulator,
)

from flyjobs import MapResults  # noqa: E402
from flyjobs._calls.runtime import get_runtime, shutdown_runtime  # noqa: E402


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in its own process on 127.0.0.1 (a store is another host: its work is
    not this process's), with a fresh bucket; yield ``s3://bucket/flyjobs``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        bucket = "fj-bench-" + secrets.token_hex(4)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.put(f"{endpoint}/{bucket}").is_success:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "moto's server did not start"
                time.sleep(0.1)
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_ENDPOINT_URL_S3=endpoint,
            AWS_REGION="us-east-1",
        )
        yield f"s3://{bucket}/flyjobs"
    finally:
        server.terminate()
        server.wait(30)


def run_batch(
    settings: dict[str, str], channel: dict[str, str], fn: str, inputs: int, max_machines: int
) -> tuple[float, int, float, str]:
    """(makespan s, machines created, median s from an input's end to its result here,
    summary) of one batch over ``channel``'s settings."""
    env = {**settings, **channel, "FLYJOBS_RATE_LIMITS": "fly"}
    # The API's create burst refills first: each batch starts as the first of a process would
    # (the one after another otherwise creates at 1/s from its start, seconds slower).
    time.sleep(FLY_CREATE_BURST / FLY_CREATE_PER_S + 1.0)
    os.environ.update(env)
    shutdown_runtime()
    try:
        get_runtime()
        started = time.perf_counter()
        results: MapResults[Any]
        if fn == "sleep":
            results = sleep_s.map([0.5] * inputs, max_machines=max_machines)
            assert list(results) == [0.5] * inputs
        else:
            results = noop.map(range(inputs), max_machines=max_machines)
            assert list(results) == list(range(inputs))
        makespan = time.perf_counter() - started
        summary = results.summary()
    finally:
        shutdown_runtime()
        for name in env:
            os.environ.pop(name, None)
    deliver_s = summary.phases["deliver"].percentile(0.5) or 0.0
    return makespan, summary.machines, deliver_s, str(summary).splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=300)
    parser.add_argument("--trivial", type=int, default=1000)
    parser.add_argument("--max-machines", type=int, default=64)
    parser.add_argument(
        "--case", choices=("sleep", "trivial"), help="run only this case (default: both)"
    )
    args = parser.parse_args()
    result: dict[str, float | int] = {"inputs": args.inputs, "max_machines": args.max_machines}
    flags = ("--rate-limits", "--boot-delay-s", str(FLY_BOOT_S))
    with s3_server() as store, standalone_emulator(*flags) as settings:
        _create_app(settings)
        inbox = {
            "FLYJOBS_RESULTS": "inbox",
            "FLYJOBS_INBOX_HOST": "127.0.0.1",
            "FLYJOBS_INBOX_BIND": "127.0.0.1",
        }
        through_store = {"FLYJOBS_RESULTS": "store", "FLYJOBS_STORE": store}
        base = {k: v for k, v in settings.items() if not k.startswith("FLYJOBS_INBOX")}
        cases = (("sleep", args.inputs, "", "sleep"), ("noop", args.trivial, "trivial_", "trivial"))
        for fn, count, name, case in cases:
            if args.case not in (None, case):
                continue
            figures = {}
            for side, channel in (("inbox", inbox), ("store", through_store)):
                makespan, machines, deliver_s, summary = run_batch(
                    base, channel, fn, count, args.max_machines
                )
                print(
                    f"{side:5} {count} {fn} inputs: {makespan:.2f} s; {summary};"
                    f" result here {deliver_s:.3f} s after its input ended (median)"
                )
                figures[side] = makespan
                result[f"{name}{side}_s"] = round(makespan, 3)
                result[f"{name}{side}_machines"] = machines
                result[f"{name}{side}_deliver_p50_s"] = round(deliver_s, 3)
            ratio = figures["store"] / figures["inbox"]
            result[f"store_vs_inbox_{name}ratio"] = round(ratio, 3)
        result["trivial"] = args.trivial
    print(json.dumps(result))


if __name__ == "__main__":
    main()
