"""Suspended pools (``Pool(idle="suspend")``) on an emulator as Fly: a machine idle for ``idle_s``
is suspended and resumed for the next call with its module state; a resume that cold-boots still
serves the call (on a new machine); an exiting caller destroys its suspended machines, and gc a
dead caller's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pool_funcs as funcs
import pytest
from _fly_helpers import APP, fly_env
from _pool_helpers import pool_machines
from _waiting import eventually

import flyjobs
from flyjobs._calls.runtime import Runtime, get_runtime
from flyjobs.emulator import RunningEmulator

HERE = Path(__file__).resolve().parent / "_support"


@pytest.fixture
def fly_runtime(
    make_emulator: Callable[..., RunningEmulator],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Runtime]:
    """This process's runtime on an emulator as Fly, with the emulator settings given as the
    fixture's (indirect) parameter."""
    settings: dict[str, Any] = getattr(request, "param", {})
    for _ in fly_env(make_emulator(**settings), monkeypatch):
        yield get_runtime()


def _states(runtime: Runtime, pool: flyjobs.Pool) -> list[str]:
    """The states of the pool's machines that are not destroyed."""
    return [m.state or "" for m in pool_machines(runtime, pool) if m.state != "destroyed"]


def test_idle_takes_exit_or_suspend() -> None:
    with pytest.raises(flyjobs.ConfigError, match='idle="exit".*idle="suspend"'):
        flyjobs.Pool(idle="sleep")
    assert "idle='suspend'" in repr(flyjobs.Pool(idle="suspend"))


def test_a_suspended_machine_resumes_with_its_module_state(fly_runtime: Runtime) -> None:
    pool = flyjobs.Pool(max=1, idle_s=0.3, idle="suspend")
    fn = funcs.remember.with_options(pool=pool)
    try:
        assert fn.remote(1) == [1]
        eventually(lambda: _states(fly_runtime, pool) == ["suspended"], "the idle one suspended")
        # The same process, resumed: what the first call left in the module is there.
        assert fn.remote(2) == [1, 2]
        assert len(pool_machines(fly_runtime, pool)) == 1, "a machine was created"
        # And it goes to sleep again, and serves again.
        eventually(lambda: _states(fly_runtime, pool) == ["suspended"], "suspended again")
        assert fn.remote(3) == [1, 2, 3]
    finally:
        pool.shutdown()
    assert _states(fly_runtime, pool) == []


def test_a_machine_with_two_slots_sleeps_and_wakes_whole(fly_runtime: Runtime) -> None:
    pool = flyjobs.Pool(max=1, max_concurrency=2, idle_s=0.3, idle="suspend")
    fn = funcs.remember.with_options(pool=pool)
    try:
        assert fn.remote(1) == [1]
        eventually(lambda: _states(fly_runtime, pool) == ["suspended"], "the idle one suspended")
        calls = [fn.spawn(2), fn.spawn(3)]
        seen: list[list[int]] = [call.result(timeout_s=60) for call in calls]
        assert all(value[0] == 1 for value in seen)  # both slots of the resumed process
        assert any(sorted(value) == [1, 2, 3] for value in seen)
        assert len(pool_machines(fly_runtime, pool)) == 1, "a machine was created"
    finally:
        pool.shutdown()
    assert _states(fly_runtime, pool) == []


@pytest.mark.parametrize("fly_runtime", [{"cold_resume_share": 1.0}], indirect=True)
def test_a_resume_that_cold_boots_still_serves_the_call(fly_runtime: Runtime) -> None:
    pool = flyjobs.Pool(max=1, idle_s=0.3, idle="suspend")
    fn = funcs.remember.with_options(pool=pool)
    try:
        assert fn.remote(1) == [1]
        eventually(lambda: _states(fly_runtime, pool) == ["suspended"], "the idle one suspended")
        # Its process restarted and lost the module state: the call runs on a new machine,
        # once, and max=1 still holds.
        assert fn.remote(2) == [2]
        assert len(pool_machines(fly_runtime, pool)) == 2
        assert len(_states(fly_runtime, pool)) == 1
    finally:
        pool.shutdown()
    assert _states(fly_runtime, pool) == []


# A caller whose pool's machine goes to sleep; it exits when told (a line on stdin), unless it
# is killed first (no clean-up at all).
SLEEPER = """
import sys
sys.path.insert(0, {here!r})
import flyjobs, pool_funcs
pool = flyjobs.Pool(max=1, idle_s=0.3, idle="suspend")
print(pool_funcs.remember.with_options(pool=pool).remote(1), flush=True)
sys.stdin.readline()
"""


def _sleeper(fly: dict[str, str]) -> subprocess.Popen[str]:
    """A caller (`SLEEPER`) whose pool's machine has been suspended."""
    script = SLEEPER.format(here=str(HERE))
    caller = subprocess.Popen(
        [sys.executable, "-c", script],
        env=fly,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert caller.stdout is not None and caller.stdout.readline() == "[1]\n"
        eventually(
            lambda: [m["state"] for m in _machines(fly)] == ["suspended"],
            "the caller's idle machine suspended",
        )
    except BaseException:
        caller.kill()
        caller.wait()
        raise
    return caller


def _machines(env: dict[str, str]) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {env['FLY_API_TOKEN']}"}
    with httpx.Client(base_url=env["FLY_API_HOSTNAME"], headers=headers) as http:
        machines: list[dict[str, Any]] = http.get(f"/v1/apps/{APP}/machines").json()
    return machines


@pytest.fixture
def fly(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Settings of an emulator as Fly, as the environment of a caller subprocess."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    for env in fly_env(make_emulator(), monkeypatch):
        yield {**base, **env}


@pytest.mark.slow
def test_an_exiting_caller_destroys_its_suspended_machines(fly: dict[str, str]) -> None:
    with _sleeper(fly) as caller:
        _, stderr = caller.communicate("exit\n", timeout=60)
    assert caller.returncode == 0, stderr
    assert _machines(fly) == []  # at once: the exiting caller destroyed it


@pytest.mark.slow
def test_gc_destroys_the_suspended_machines_of_a_dead_caller(fly: dict[str, str]) -> None:
    with _sleeper(fly) as caller:
        caller.send_signal(signal.SIGKILL)
    (machine,) = _machines(fly)
    flyjobs_cli = [sys.executable, "-m", "flyjobs"]
    listed = subprocess.run([*flyjobs_cli, "ls"], env=fly, capture_output=True, text=True)
    assert machine["id"] in listed.stdout and "suspended" in listed.stdout, listed
    gc = subprocess.run([*flyjobs_cli, "gc"], env=fly, capture_output=True, text=True)
    assert f"destroyed {machine['id']}" in gc.stdout, gc
    assert "is gone" in gc.stdout
    assert _machines(fly) == []
