"""No machine outlives its client: an exiting client destroys its machines; one killed without
cleaning up leaves them at most until their deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _waiting import eventually

# remote_funcs lives in tests/_support (on sys.path in pytest, inserted by hand here).
HERE = Path(__file__).resolve().parent / "_support"

CLIENT = """
import os, signal, sys, time
sys.path.insert(0, {here!r})
import remote_funcs
call = remote_funcs.record_pid_and_hang.spawn({pid_file!r})
while not os.path.exists({pid_file!r}):
    time.sleep(0.01)
time.sleep(0.2)
os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no cleanup
"""


def _run_client(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as a client process on the embedded emulator (no Fly token)."""
    env = {k: v for k, v in os.environ.items() if k != "FLY_API_TOKEN"}
    return subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=cwd,
        timeout=60,
        capture_output=True,
        text=True,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


EXITING_CLIENT = """
import os, sys, time
sys.path.insert(0, {here!r})
import remote_funcs
files = [os.path.join({folder!r}, f"{{i}}.pid") for i in range(6)]
calls = [remote_funcs.record_pid_and_sleep.spawn(f) for f in files]
while not all(os.path.exists(f) and os.path.getsize(f) for f in files):
    time.sleep(0.01)
print("exiting with", len(calls), "calls running")
"""


def test_an_exiting_client_destroys_its_running_machines(tmp_path: Path) -> None:
    client = _run_client(EXITING_CLIENT.format(here=str(HERE), folder=str(tmp_path)), tmp_path)
    assert client.returncode == 0, client.stderr
    assert "exiting with 6 calls running" in client.stdout
    assert "Traceback" not in client.stderr and "Exception ignored" not in client.stderr
    pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 6
    assert [pid for pid in pids if _alive(pid)] == []


@pytest.mark.slow
def test_worker_deadline_ends_the_machine_of_a_killed_client(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    client = _run_client(CLIENT.format(here=str(HERE), pid_file=str(pid_file)), tmp_path)
    assert client.returncode == -signal.SIGKILL
    worker = int(pid_file.read_text())
    assert _alive(worker), "the machine should still run right after its client died"
    # timeout_s=2 plus the worker's slack ends it, though nobody destroyed it.
    eventually(lambda: not _alive(worker), "the worker ended at its own deadline")


INTERRUPTED_CLIENT = """
import os, signal, sys, threading, time
sys.path.insert(0, {here!r})
import remote_funcs
from flyjobs._calls.runtime import get_runtime

def interrupt_when_running():
    rt = get_runtime()
    while not rt.portal.call(lambda: rt.client.list_machines(rt.app, state="started")):
        time.sleep(0.01)
    time.sleep(0.5)  # the main thread is now waiting for the result, as a user at Ctrl-C is
    os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C does

threading.Thread(target=interrupt_when_running, daemon=True).start()
try:
    remote_funcs.slow.remote(30)
except KeyboardInterrupt:
    rt = get_runtime()
    live = rt.portal.call(lambda: rt.client.list_machines(rt.app))
    print("interrupted; live machines:", [m.state for m in live if m.state != "destroyed"])
"""


def test_ctrl_c_during_a_remote_call_destroys_its_machine(tmp_path: Path) -> None:
    client = _run_client(INTERRUPTED_CLIENT.format(here=str(HERE)), tmp_path)
    assert client.returncode == 0, client.stderr
    assert "interrupted; live machines: []" in client.stdout


MAPPING_CLIENT = """
import os, sys
sys.path.insert(0, {here!r})
import remote_funcs
files = [os.path.join({folder!r}, f"{{i}}.pid") for i in range(6)]
for _ in remote_funcs.record_pid_and_sleep.map(files):
    pass
"""


def test_sigterm_to_a_mapping_script_destroys_its_machines(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLY_API_TOKEN"}
    script = MAPPING_CLIENT.format(here=str(HERE), folder=str(tmp_path))
    client = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        files = [tmp_path / f"{i}.pid" for i in range(6)]
        eventually(
            lambda: (
                client.poll() is not None or all(f.exists() and f.stat().st_size for f in files)
            ),
            "every machine of the mapping script started",
            60,
        )
        assert client.poll() is None, client.communicate()[1]
        client.send_signal(signal.SIGTERM)
        _, stderr = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 128 + signal.SIGTERM, stderr
    pids = [int(f.read_text()) for f in files]
    assert [pid for pid in pids if _alive(pid)] == []
