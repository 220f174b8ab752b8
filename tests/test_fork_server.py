"""The emulator's fork server (`flyjobs._machine_side.zygote`): worker machines forked from an
interpreter that has already started, seen from inside the machine and from the API, against
machines spawned as fresh processes (``fork_server=False``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fork_funcs as funcs
import pytest
from _emu_helpers import create, exit_event, get, new_app, sync_client, wait_ok
from _fly_helpers import fly_env
from _waiting import eventually

from flyjobs._calls.runtime import get_runtime
from flyjobs._wire.machine import EXIT_BAD_PAYLOAD
from flyjobs.emulator import EmulatorConfig, RunningEmulator, serve_in_thread

_WORKER = ["python", "-m", "flyjobs.worker"]

#: Variables that name the machine itself: they differ between any two machines.
_PER_MACHINE = {
    "FLY_MACHINE_ID", "FLY_ALLOC_ID", "FLY_MACHINE_VERSION", "FLY_PRIVATE_IP",
    "FLYJOBS_MACHINE_ROOT",
}  # fmt: skip


@pytest.fixture(params=[True, False], ids=["forked", "fresh"])
def on(
    request: pytest.FixtureRequest,
    make_emulator: Callable[..., RunningEmulator],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[bool]:
    """flyjobs pointed at an emulator with the fork server on (True) or off."""
    for _ in fly_env(make_emulator(fork_server=request.param), monkeypatch):
        yield request.param


def _facts(on_env: dict[str, str] | None = None) -> dict[str, Any]:
    fn = funcs.probe if on_env is None else funcs.probe.with_options(env=on_env)
    facts: dict[str, Any] = fn.remote()
    # A machine runs in its own root (its path, per machine, is named alike in both).
    root = facts["env"]["FLYJOBS_MACHINE_ROOT"]
    facts["cwd"], facts["path0"] = (facts[k].replace(root, "<root>") for k in ("cwd", "path0"))
    facts["env"] = {k: v for k, v in facts["env"].items() if k not in _PER_MACHINE}
    return facts


def test_a_forked_worker_sees_what_a_fresh_one_sees(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}
    for fork_server in (True, False):
        for _ in fly_env(make_emulator(fork_server=fork_server), monkeypatch):
            # TZ is read once at interpreter start: a forked worker must read its own.
            seen[fork_server] = [_facts(), _facts(), _facts({"TZ": "Asia/Tokyo", "MODE": "x"})]
    forked, fresh = seen[True], seen[False]
    # Started by the fork server, not by the emulator (which runs in this process).
    assert all(facts.pop("ppid") != os.getpid() for facts in forked)
    assert all(facts.pop("ppid") == os.getpid() for facts in fresh)
    assert forked == fresh
    first, _second, tokyo = forked
    assert first["calls"] == 1 and _second["calls"] == 1, "module state leaked between machines"
    assert first["own_session"] and first["own_group"] and first["stdin"] == ""
    assert first["argv"] == ["worker.py"] and first["blocked_signals"] == []
    assert tokyo["tzname"] == ["JST", "JST"] and tokyo["env"]["MODE"] == "x"
    assert "MODE" not in first["env"]


def test_a_forked_worker_runs_its_atexit_handlers(on: bool, tmp_path: Path) -> None:
    marker = tmp_path / "exited"
    call = funcs.exit_hook.spawn(str(marker))
    call.result(timeout_s=30)
    runtime = get_runtime()
    app, machine_id = runtime.app, call.machine_id
    assert app is not None and machine_id is not None
    # The result comes before the worker's interpreter exits: wait for the machine's end.
    runtime.portal.call(lambda: runtime.client.wait(app, machine_id, "destroyed", timeout_s=30))
    assert marker.read_text() == "ran"


def test_a_worker_exit_waits_for_threads_and_flushes_and_only_fresh_ones_finalize(
    on: bool, tmp_path: Path
) -> None:
    """A forked worker ends as an interpreter does (non-daemon threads joined, atexit handlers
    run, output flushed) except that it does not finalize objects: that teardown would copy
    the server's memory into each child, the larger part of a trivial call's CPU."""
    call = funcs.exit_work.spawn(str(tmp_path))
    call.result(timeout_s=30)
    runtime = get_runtime()
    app, machine_id = runtime.app, call.machine_id
    assert app is not None and machine_id is not None
    ended = runtime.portal.call(
        lambda: runtime.client.wait(app, machine_id, "destroyed", timeout_s=30)
    )
    assert ended is not None
    assert (tmp_path / "thread").read_text() == "ran"
    logs = runtime.portal.call(lambda: runtime.client.log_tail(app, machine_id, lines=50))
    assert "printed at exit" in logs
    assert (tmp_path / "finalized").exists() is not on


def test_a_python_startup_variable_gets_its_own_server(on: bool) -> None:
    """PYTHON* variables shape an interpreter's start: a machine that sets one must not be
    forked from a server started without it."""
    facts = _facts({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUTF8": "1"})
    assert facts["env"]["PYTHONUTF8"] == "1"
    assert (facts["utf8_mode"], facts["dont_write_bytecode"]) == (1, True)
    plain = _facts()
    assert "PYTHONUTF8" not in plain["env"] and plain["utf8_mode"] == 0


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "fresh"])
def test_exit_codes_output_and_stop_signals_reach_the_api(
    make_emulator: Callable[..., RunningEmulator], fork_server: bool
) -> None:
    emu = make_emulator(fork_server=fork_server)
    with sync_client(emu) as client:
        app = new_app(client)
        bad = create(client, app, [*_WORKER, "--payload", "/nonexistent"], restart={"policy": "no"})
        wait_ok(client, app, bad["id"], "stopped")
        assert exit_event(get(client, app, bad["id"]))["exit_code"] == EXIT_BAD_PAYLOAD
        logs = client.get(f"/api/v1/apps/{app}/logs", params={"instance": bad["id"]}).json()
        assert any("cannot read the payload" in e["attributes"]["message"] for e in logs["data"])
        # A worker that never ends (its payload is a FIFO nobody writes): stop sends its signal,
        # then SIGKILL after the stop timeout, to the machine's process group.
        fifo = Path(emu.data_dir) / "never.fifo"
        os.mkfifo(fifo)
        writer = os.open(fifo, os.O_RDWR)  # held open, never written: the worker's read blocks
        try:
            stuck = create(
                client, app, [*_WORKER, "--payload", str(fifo)], restart={"policy": "no"}
            )
            wait_ok(client, app, stuck["id"], "started")
            # "started" is the process's spawn: a SIGINT while its interpreter is still starting
            # ends it as CPython's start-up does (exit 1), not as the worker's Python does.
            eventually(lambda: _holders(fifo), "the worker opened its payload", 120)
            stop = client.post(
                f"/v1/apps/{app}/machines/{stuck['id']}/stop", json={"timeout": "30s"}
            )
            assert stop.status_code == 200, stop.text
            wait_ok(client, app, stuck["id"], "stopped")
        finally:
            os.close(writer)
        ended = exit_event(get(client, app, stuck["id"]))
    assert ended["requested_stop"] is True
    # Fly's default stop signal is SIGINT: the worker ends as Python does on one.
    assert (ended["exit_code"], ended["signal"]) == (130, 2)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_a_killed_fork_server_fails_its_machines_and_later_ones_still_run(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    fifo = tmp_path / "never.fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # never written: the worker blocks reading its payload
    try:
        emu = make_emulator()
        with sync_client(emu) as client:
            app = new_app(client)
            stuck = create(
                client, app, [*_WORKER, "--payload", str(fifo)], restart={"policy": "no"}
            )
            wait_ok(client, app, stuck["id"], "started")
            (worker,) = eventually(lambda: _holders(fifo), "the worker opened its payload", 120)
            with open(f"/proc/{worker}/stat") as stat:
                server = int(stat.read().rsplit(")", 1)[1].split()[1])
            assert server != os.getpid()  # forked by the fork server
            os.kill(server, signal.SIGKILL)
            # Its machine ends (killed with the server's children), instead of hanging.
            wait_ok(client, app, stuck["id"], "stopped", timeout=60)
            assert exit_event(get(client, app, stuck["id"]))["signal"] == signal.SIGKILL
            # A killed process closes its files as it ends.
            eventually(lambda: not _holders(fifo), "the machine's process ended with its server")
            # The next worker machine still runs (spawned fresh).
            bad = [*_WORKER, "--payload", "/nonexistent"]
            later = create(client, app, bad, restart={"policy": "no"})
            wait_ok(client, app, later["id"], "stopped", timeout=60)
            assert exit_event(get(client, app, later["id"]))["exit_code"] == EXIT_BAD_PAYLOAD
    finally:
        os.close(writer)


_EMULATOR_SCRIPT = """
import os, sys, time, httpx
from flyjobs.emulator import EmulatorConfig, serve_in_thread

def children_running(name):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:  # a process may end between the listing and the reads (a machine's, under load)
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmd:
                ppid = stat.read().rsplit(")", 1)[1].split()[1]
                found = ppid == str(os.getpid()) and name in cmd.read()
        except OSError:
            continue
        if found:
            yield pid

worker = ["python", "-m", "flyjobs.worker", "--payload", "/nonexistent"]
config = {"image": "x", "init": {"exec": worker}, "restart": {"policy": "no"}}
token = "t0ken-for-the-fork-test"
with serve_in_thread(EmulatorConfig(tokens=[token])) as emu:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=emu.url, headers=auth) as c:
        c.post("/v1/apps", json={"app_name": "a", "org_slug": "personal"}).raise_for_status()
        for _ in range(2):
            m = c.post("/v1/apps/a/machines", json={"config": config}).json()
            c.get(f"/v1/apps/a/machines/{m['id']}/wait", params={"state": "stopped"})
    print(*children_running(b"flyjobs._machine_side.zygote"), flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="the fork server is Linux only")
def test_a_killed_emulator_leaves_no_fork_server() -> None:
    import select
    import subprocess
    import sys

    with subprocess.Popen(
        [sys.executable, "-c", _EMULATOR_SCRIPT], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            servers = [int(pid) for pid in process.stdout.readline().split()]
            assert len(servers) == 1, servers
            pidfd = os.pidfd_open(servers[0])
        finally:
            process.kill()
    try:
        # The emulator's end of the socket closed: the server ends (a generous upper bound).
        readable, _, _ = select.select([pidfd], [], [], 60)
        assert readable, "the fork server outlived its emulator"
    finally:
        os.close(pidfd)


def _holders(path: Path) -> set[int]:
    """The processes (other than this one) that have ``path`` open."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                        found.add(int(pid))
    return found - {os.getpid()}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_stopping_the_emulator_ends_its_forked_machines(tmp_path: Path) -> None:
    fifo = tmp_path / "never.fifo"
    os.mkfifo(fifo)
    # Held open for writing and never written: the worker reading its payload blocks.
    writer = os.open(fifo, os.O_RDWR)
    try:
        with serve_in_thread(EmulatorConfig(tokens=["t0ken-for-the-fork-test"])) as emu:
            with sync_client(emu) as client:
                app = new_app(client)
                machine = create(client, app, [*_WORKER, "--payload", str(fifo)])
                wait_ok(client, app, machine["id"], "started")
                eventually(lambda: _holders(fifo), "the worker opened its payload", 120)
        assert _holders(fifo) == set(), "a machine process outlived the emulator"
    finally:
        os.close(writer)


def test_a_signal_reaches_a_machine_that_has_no_group_yet() -> None:
    """Under load a forked child may not have run (made its own session) when its machine is
    stopped: the signal must reach the child itself, not be dropped with the missing group."""
    import subprocess
    import sys

    from flyjobs._machine_side.forking import signal_machine

    # A process in this test's own group, as a child is between its fork and its setsid().
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        signal_machine(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow
def test_a_stop_sent_as_a_forked_machine_starts_always_reaches_it(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    """A signal can reach a child before its interpreter's after-fork reset, which drops it:
    the server blocks signals over the fork. Busy processes widen that window (on a loaded
    2-core box 5 of 60 stops were lost without the block). A lost stop is seen as the SIGKILL
    that follows the stop's timeout, which is long, so that a slow one (a starved CI box) is
    not taken for a lost one."""
    emu = make_emulator()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        with sync_client(emu) as client:
            app = new_app(client)
            # The fork server up first (a machine stopped before its process exists has no
            # exit event).
            bad = create(
                client, app, [*_WORKER, "--payload", "/nonexistent"], restart={"policy": "no"}
            )
            wait_ok(client, app, bad["id"], "stopped")
            fifo = Path(emu.data_dir) / "never.fifo"
            os.mkfifo(fifo)
            ends = []
            for _ in range(60):
                stuck = create(
                    client, app, [*_WORKER, "--payload", str(fifo)], restart={"policy": "no"}
                )
                stop = f"/v1/apps/{app}/machines/{stuck['id']}/stop"
                assert client.post(stop, json={"timeout": "45s"}).status_code == 200
                wait_ok(client, app, stuck["id"], "stopped", timeout=60)
                ended = exit_event(get(client, app, stuck["id"]))
                ends.append((ended["exit_code"], ended["signal"]))
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert ends == [(130, signal.SIGINT)] * 60
