"""Detached calls: the spawning process exits, the machine runs on, and another process gets
the result through ``Call.from_id`` (standalone emulator in Fly mode, moto as the store)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import store_funcs as funcs
from _store_helpers import APP, live_machines, objects

import flyjobs
from flyjobs._jobs import collect_strays
from flyjobs._runtime import get_runtime, shutdown_runtime

SUPPORT = Path(__file__).resolve().parent.parent / "_support"

SPAWNER = """
import store_funcs
call = store_funcs.slow_square.spawn_detached(7, 2.0)
print(call.id, flush=True)  # and exit at once
"""

READER = """
import sys, flyjobs
call = flyjobs.Call.from_id(sys.argv[1])
print(call.status.value, call.result(timeout_s=60), call.status.value, flush=True)
"""


def _python(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SUPPORT)}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_from_id_in_a_second_process_after_the_spawner_exited(fly_store: str) -> None:
    call_id = _python(SPAWNER)
    # The spawner is gone; its machine is not, and `flyjobs gc` leaves it to its deadline.
    assert len(live_machines()) == 1
    runtime = get_runtime()
    assert runtime.portal.call(lambda: collect_strays(runtime.client, APP, dry_run=True)) == []
    assert _python(READER, call_id) == "running 49 succeeded"
    assert objects(fly_store) == []  # read once, then deleted
    with pytest.raises(flyjobs.UnknownCallError):
        flyjobs.Call.from_id(call_id).result(timeout_s=30)


def test_from_id_cancel_destroys_the_machine(fly_store: str) -> None:
    call = funcs.slow_square.spawn_detached(3, 30.0)
    shutdown_runtime()  # as if the spawner exited: the machine runs on
    assert len(live_machines()) == 1
    handle = flyjobs.Call.from_id(call.id)
    assert handle.status.value == "running"
    assert handle.cancel() is True
    assert handle.status.value == "cancelled"
    deadline = time.monotonic() + 15
    while live_machines() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_machines() == []
    assert objects(fly_store) == []


def test_a_detached_error_comes_back_as_its_own_type(fly_store: str) -> None:
    call = funcs.fail.spawn_detached("later")
    shutdown_runtime()
    with pytest.raises(funcs.StoreTestError, match="later"):
        flyjobs.Call.from_id(call.id).result(timeout_s=60)
    assert objects(fly_store) == []


def test_detach_needs_the_store(fly_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYJOBS_RESULTS", "inbox")
    monkeypatch.setenv("FLYJOBS_INBOX_HOST", "127.0.0.1")
    monkeypatch.setenv("FLYJOBS_INBOX_BIND", "127.0.0.1")
    shutdown_runtime()
    with pytest.raises(flyjobs.ConfigError, match="FLYJOBS_STORE"):
        funcs.double.spawn_detached(1)
    runtime = get_runtime()
    assert runtime.portal.call(lambda: runtime.client.list_machines(APP)) == []
