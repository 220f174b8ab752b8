"""Running ``python -m flyjobs.worker`` as a real process, as the emulator does."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from flyjobs._wire.machine import MACHINE_ROOT_ENV
from flyjobs._wire.remote_errors import rebuild_exception
from flyjobs._wire.result_envelope import ResultEnvelope


def unwrap(result: ResultEnvelope, *, pickle: bool = False) -> Any:
    """The value of a decoded result, or raise its rebuilt exception (as a test's caller)."""
    if result.error is not None:
        raise rebuild_exception(result.error, pickle=pickle, may_import=lambda _: True)
    return result.value(pickle=pickle)


@dataclass
class WorkerRun:
    returncode: int
    stdout: str
    stderr: str


RunWorker = Callable[..., Awaitable[WorkerRun]]


async def run_worker_process(root: Path, *extra_args: str, timeout_s: float = 30) -> WorkerRun:
    """``python -m flyjobs.worker`` as a real process, with `root` as its machine root."""
    env = {**os.environ, MACHINE_ROOT_ENV: str(root)}
    with anyio.fail_after(timeout_s):
        process = await anyio.run_process(
            [sys.executable, "-m", "flyjobs.worker", *extra_args],
            env=env,
            cwd=root,
            check=False,
        )
    return WorkerRun(process.returncode, process.stdout.decode(), process.stderr.decode())
