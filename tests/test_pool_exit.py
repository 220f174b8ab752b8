"""Pool machines never outlive their caller: an exiting caller destroys them, and one killed
with SIGKILL leaves them at most ``idle_s`` plus the worker's grace (the worker ends itself).

The caller is a subprocess; the emulator runs in the test process, so it outlives the caller
and shows what happens to the machines afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _fly_helpers import APP, fly_env
from _waiting import eventually

from flyjobs._wire.machine import IDLE_EXIT_GRACE_S
from flyjobs.emulator import RunningEmulator

HERE = Path(__file__).resolve().parent / "_support"
IDLE_S = 2.0
# The workers' own bound (idle_s plus the grace), with room for a loaded box: it bounds a
# stuck test, it does not time the workers.
WORKERS_END_S = IDLE_S + IDLE_EXIT_GRACE_S + 15

# Two calls that need two machines at once; print both machines' pids.
CLIENT = """
import os, signal, sys, time
sys.path.insert(0, {here!r})
import flyjobs, pool_funcs
pool = flyjobs.Pool(max=2, idle_s={idle_s!r})
fn = pool_funcs.meet.with_options(pool=pool)
calls = [fn.spawn({folder!r}, x, 2) for x in range(2)]
print(" ".join(str(call.result()[1]) for call in calls), flush=True)
{ending}
"""

# Then a call that hangs on one of the two (warm) machines, and the caller exits.
BUSY_AT_EXIT = """
pid_file = os.path.join({folder!r}, "busy.pid")
busy = pool_funcs.hang_the_first_time.with_options(pool=pool).spawn(pid_file)
while not (os.path.exists(pid_file) and os.path.getsize(pid_file)):
    time.sleep(0.01)
print(open(pid_file).read(), flush=True)
"""


@pytest.fixture
def fly(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    yield from fly_env(make_emulator(), monkeypatch)


def _run_client(
    fly: dict[str, str], ending: str, folder: Path, idle_s: float
) -> tuple[int, list[int], str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    meet = folder / "meet"
    meet.mkdir()
    script = CLIENT.format(here=str(HERE), folder=str(meet), idle_s=idle_s, ending=ending)
    client = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, **fly},
        cwd=folder,
        timeout=60,
        capture_output=True,
        text=True,
        check=False,
    )
    pids = [int(pid) for pid in client.stdout.split()]
    return client.returncode, pids, client.stderr


def _machines(fly: dict[str, str]) -> list[dict[str, Any]]:
    """The app's machines, destroyed ones included."""
    headers = {"Authorization": f"Bearer {fly['FLY_API_TOKEN']}"}
    with httpx.Client(base_url=fly["FLY_API_HOSTNAME"], headers=headers) as http:
        answer = http.get(f"/v1/apps/{APP}/machines", params={"include_deleted": "true"})
    machines: list[dict[str, Any]] = answer.json()
    return machines


def _up(fly: dict[str, str]) -> list[str]:
    """The app's machines that are not destroyed."""
    return [m["id"] for m in _machines(fly) if m["state"] != "destroyed"]


def test_interpreter_exit_leaves_no_pool_machine(fly: dict[str, str], tmp_path: Path) -> None:
    # idle_s far beyond the test: the machines end because the caller exits, not idle.
    ending = BUSY_AT_EXIT.format(folder=str(tmp_path))
    code, pids, stderr = _run_client(fly, ending, tmp_path, idle_s=600.0)
    assert code == 0, stderr
    assert len(set(pids)) == 2 and pids[2] in pids[:2]  # one machine idle, one busy
    assert _up(fly) == []  # at once: the exiting caller destroyed them
    assert "Traceback" not in stderr


def test_sigkill_of_the_caller_ends_its_pool_machines_within_idle_s_and_grace(
    fly: dict[str, str], tmp_path: Path
) -> None:
    ending = "os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no clean-up"
    code, pids, stderr = _run_client(fly, ending, tmp_path, idle_s=IDLE_S)
    assert code == -signal.SIGKILL, stderr
    assert len(set(pids)) == 2
    # Only the workers themselves can end the machines now (auto_destroy then removes them).
    eventually(lambda: _up(fly) == [], "the workers ended their idle machines", WORKERS_END_S)


# Machines started with the pool (min=2), before any call; then the caller ends.
STARTED = """
import os, signal, sys
sys.path.insert(0, {here!r})
import flyjobs, pool_funcs
pool = flyjobs.Pool(min=2, max=2, idle_s={idle_s!r})
pool_funcs.pid_of.with_options(pool=pool)
pool.start()
print("started", flush=True)
{ending}
"""


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_machines_started_with_the_pool_never_outlive_the_caller(
    fly: dict[str, str], tmp_path: Path, ending: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    kill = "os.kill(os.getpid(), signal.SIGKILL)" if ending == "sigkill" else ""
    # idle_s far beyond the test when the caller exits (only its exit ends them), short when
    # it is killed (only the workers' own bound ends them).
    idle_s = IDLE_S if ending == "sigkill" else 600.0
    script = STARTED.format(here=str(HERE), idle_s=idle_s, ending=kill)
    client = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, **fly},
        cwd=tmp_path,
        timeout=60,
        capture_output=True,
        text=True,
        check=False,
    )
    assert client.stdout == "started\n", client.stderr
    assert len(_machines(fly)) == 2  # started with the pool, no call made
    if ending == "exit":
        assert client.returncode == 0, client.stderr
        assert _up(fly) == []  # at once: the exiting caller destroyed them
        return
    assert client.returncode == -signal.SIGKILL
    eventually(lambda: _up(fly) == [], "the workers ended their idle machines", WORKERS_END_S)
