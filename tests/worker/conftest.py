"""Fixtures of the worker tests: a real ResultInbox and real ``python -m flyjobs.worker`` runs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from worker_harness import RunWorker, WorkerRun, run_worker_process

from flyjobs._results.inbox import ResultInbox
from flyjobs._wire.call_envelope import encode_call
from flyjobs._wire.machine import PAYLOAD_GUEST_PATH

# worker_funcs lives in tests/_support: the worker imports it with that folder on its sys.path.
SUPPORT = Path(__file__).resolve().parent.parent / "_support"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def inbox() -> AsyncIterator[ResultInbox]:
    async with ResultInbox() as running:
        yield running


@pytest.fixture
def machine_root(tmp_path: Path) -> Path:
    """A machine's root folder, as the emulator gives one (the payload lives under it)."""
    (tmp_path / PAYLOAD_GUEST_PATH.lstrip("/")).parent.mkdir(parents=True)
    return tmp_path


@pytest.fixture
def run_worker(machine_root: Path) -> RunWorker:
    """Write a payload for ``fn(*args, **kwargs)`` and run a worker process on it.

    ``deadline_s`` is seconds from now; ``sys_path`` defaults to tests/_support so that
    ``worker_funcs`` is importable by the worker.
    """

    async def run(
        fn: str,
        *args: Any,
        call_id: str,
        result_url: str,
        deadline_s: float = 30.0,
        sys_path: list[str] | None = None,
        pickle: bool = False,
        **kwargs: Any,
    ) -> WorkerRun:
        payload = encode_call(
            fn,
            args,
            kwargs,
            call_id=call_id,
            deadline=time.time() + deadline_s,
            result_url=result_url,
            sys_path=[str(SUPPORT)] if sys_path is None else sys_path,
            pickle=pickle,
        )
        (machine_root / PAYLOAD_GUEST_PATH.lstrip("/")).write_bytes(payload)
        return await run_worker_process(machine_root)

    return run
