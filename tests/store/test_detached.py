"""Detached calls: the spawning process exits, the machine runs on, and another process gets
the result through ``Call.from_id`` (standalone emulator in Fly mode, moto as the store)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import store_funcs as funcs
from _store_helpers import APP, live_machines, objects
from _waiting import eventually

import flyjobs
from flyjobs._calls.fleet import collect_strays
from flyjobs._calls.runtime import get_runtime, shutdown_runtime
from flyjobs._results.store import Store, StoreConfig

SUPPORT = Path(__file__).resolve().parent.parent / "_support"

SPAWNER = """
import sys, store_funcs
call = store_funcs.square_when.spawn_detached(7, sys.argv[1])
print(call.id, flush=True)  # and exit at once
"""

# The function runs until the reader has seen it running (the release file), however slowly
# the processes start.
READER = """
import pathlib, sys, flyjobs
call = flyjobs.Call.from_id(sys.argv[1])
seen = call.status.value
pathlib.Path(sys.argv[2]).touch()
print(seen, call.result(timeout_s=60), call.status.value, flush=True)
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


@pytest.mark.slow
def test_from_id_in_a_second_process_after_the_spawner_exited(
    fly_store: str, tmp_path: Path
) -> None:
    release = str(tmp_path / "release")
    call_id = _python(SPAWNER, release)
    # The spawner is gone; its machine is not, and `flyjobs gc` leaves it to its deadline.
    assert len(live_machines()) == 1
    runtime = get_runtime()
    assert runtime.portal.call(lambda: collect_strays(runtime.client, APP, dry_run=True)) == []
    assert _python(READER, call_id, release) == "running 49 succeeded"
    # The result was read once and deleted; the call's record stays, saying so.
    assert [info.key for info in objects(fly_store)] == [f"calls/{call_id}"]
    again = flyjobs.Call.from_id(call_id)
    assert again.status == flyjobs.CallStatus.consumed
    with pytest.raises(flyjobs.UnknownCallError, match="already read"):
        again.result(timeout_s=30)


def test_status_is_read_from_the_truth_when_asked(fly_store: str) -> None:
    """A finished call says ``succeeded`` before anyone polled or read it, and once its
    result was read, a fresh handle says so instead of ``running``."""
    call = funcs.double.spawn_detached(21)
    shutdown_runtime()  # as if the spawner exited
    eventually(lambda: live_machines() == [], "the machine finished")
    handle = flyjobs.Call.from_id(call.id)
    assert handle.status == flyjobs.CallStatus.succeeded
    assert handle.done()
    assert handle.result(timeout_s=30) == 42
    fresh = flyjobs.Call.from_id(call.id)
    assert fresh.status.value == "succeeded, result already read"
    assert fresh.done() and fresh.cancel() is False
    with pytest.raises(flyjobs.UnknownCallError, match="succeeded, and its result was already"):
        fresh.result(timeout_s=30)


def test_from_id_cancel_destroys_the_machine(fly_store: str) -> None:
    call = funcs.slow_square.spawn_detached(3, 30.0)
    shutdown_runtime()  # as if the spawner exited: the machine runs on
    assert len(live_machines()) == 1
    handle = flyjobs.Call.from_id(call.id)
    assert handle.status.value == "running"
    assert handle.cancel() is True
    assert handle.status.value == "cancelled"
    eventually(lambda: live_machines() == [], "the machine is gone")
    assert [info.key for info in objects(fly_store)] == [f"calls/{call.id}"]
    assert flyjobs.Call.from_id(call.id).status == flyjobs.CallStatus.cancelled


def test_a_detached_error_comes_back_as_its_own_type(fly_store: str) -> None:
    call = funcs.fail.spawn_detached("later")
    shutdown_runtime()
    with pytest.raises(funcs.StoreTestError, match="later"):
        flyjobs.Call.from_id(call.id).result(timeout_s=60)
    assert [info.key for info in objects(fly_store)] == [f"calls/{call.id}"]
    with pytest.raises(flyjobs.UnknownCallError, match="failed, and its error was already"):
        flyjobs.Call.from_id(call.id).result(timeout_s=60)


def test_detach_needs_the_store(fly_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYJOBS_RESULTS", "inbox")
    monkeypatch.setenv("FLYJOBS_INBOX_HOST", "127.0.0.1")
    monkeypatch.setenv("FLYJOBS_INBOX_BIND", "127.0.0.1")
    shutdown_runtime()
    with pytest.raises(flyjobs.ConfigError, match="FLYJOBS_STORE"):
        funcs.double.spawn_detached(1)
    runtime = get_runtime()
    assert runtime.portal.call(lambda: runtime.client.list_machines(APP)) == []


# --- a bucket writer changes records (docs/threat-model.md, 3b) ---------------------------------

_MARK = b"\n-flyjobs-mac:"


def _store(bucket: str) -> Store:
    config = StoreConfig.load(f"s3://{bucket}/flyjobs")
    assert config is not None
    return Store(config)


def _record(bucket: str, call_id: str) -> tuple[bytes, dict[str, Any]]:
    """A call's record as stored, and its fields as a bucket reader decodes them."""
    data = _store(bucket).get_sync(f"calls/{call_id}")
    assert data is not None
    body = data.rpartition(_MARK)[0] or data
    return data, msgpack.unpackb(body, raw=False)


def _tamper(bucket: str, call_id: str, **changes: Any) -> bytes:
    """Rewrite fields of a call's record, keeping whatever seal it had; return the original."""
    data, record = _record(bucket, call_id)
    body, mark, mac = data.rpartition(_MARK)
    changed = msgpack.packb({**record, **changes}) + (mark + mac if mark else b"")
    _store(bucket).put_sync(f"calls/{call_id}", changed)
    return data


def test_a_record_flipped_to_pickle_runs_nothing_in_the_caller(
    fly_store: str, tmp_path: Path
) -> None:
    """The value's msgpack bytes happen to be a pickle that runs code: a record that says
    ``pickle`` where the call did not is refused, and nothing is decoded or deleted."""
    marker = tmp_path / "pwned"
    call = funcs.pickle_shaped.spawn_detached(str(marker))
    shutdown_runtime()
    key = f"results/{call.id}"
    eventually(lambda: key in [info.key for info in objects(fly_store)], f"{key} was put")
    _tamper(fly_store, call.id, pickle=True)
    with pytest.raises(flyjobs.SerializationError, match="not sealed for it"):
        flyjobs.Call.from_id(call.id).result(timeout_s=30)
    assert not marker.exists(), "a bucket writer ran code in the caller"
    assert len(objects(fly_store)) == 2  # the result and the record, untouched


def test_a_record_pointed_at_another_call_or_machine_is_refused(fly_store: str) -> None:
    """Swapping ``attempt_id`` would return (and delete) another call's value; pointing
    ``machine_id`` at another machine would make ``cancel()`` destroy it."""
    slow = funcs.slow_square.spawn_detached(3, 30.0)
    other = funcs.slow_square.spawn_detached(4, 30.0)
    quick = funcs.double.spawn_detached(5)
    shutdown_runtime()
    key = f"results/{quick.id}"
    eventually(lambda: key in [info.key for info in objects(fly_store)], f"{key} was put")
    machine_of_other = _record(fly_store, other.id)[1]["machine_id"]
    for changes in ({"attempt_id": quick.id}, {"machine_id": machine_of_other}):
        original = _tamper(fly_store, slow.id, **changes)
        with pytest.raises(flyjobs.SerializationError, match="not sealed for it"):
            flyjobs.Call.from_id(slow.id).cancel()
        _store(fly_store).put_sync(f"calls/{slow.id}", original)
    assert machine_of_other in live_machines()
    assert flyjobs.Call.from_id(quick.id).result(timeout_s=30) == 10
    # A record copied whole to another call's name is not that call's either.
    _store(fly_store).put_sync(f"calls/{other.id}", _record(fly_store, slow.id)[0])
    with pytest.raises(flyjobs.SerializationError, match="not sealed for it"):
        flyjobs.Call.from_id(other.id)
    assert flyjobs.Call.from_id(slow.id).cancel() is True
    get_runtime().portal.call(
        lambda: get_runtime().client.delete_machine(APP, machine_of_other, force=True)
    )


def test_from_id_in_another_app_is_a_clear_error_that_touches_nothing(
    fly_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = funcs.slow_square.spawn_detached(6, 1.0)
    shutdown_runtime()
    monkeypatch.setenv("FLY_APP", "another-app")
    with pytest.raises(flyjobs.ConfigError, match="runs in the app 'flyjobs-store'.*FLY_APP="):
        flyjobs.Call.from_id(call.id).result(timeout_s=30)
    assert [info.key for info in objects(fly_store)] == [f"calls/{call.id}"]
    monkeypatch.setenv("FLY_APP", APP)
    shutdown_runtime()
    assert flyjobs.Call.from_id(call.id).result(timeout_s=30) == 36


def test_an_id_that_is_not_a_call_id_is_said_so(fly_store: str) -> None:
    with pytest.raises(flyjobs.UnknownCallError, match="'../x' is not a call id"):
        flyjobs.Call.from_id("../x")
