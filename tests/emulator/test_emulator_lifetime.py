"""The emulator's own lifetime: stopping it kills every machine process; ``flyjobs dev``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from _emu_helpers import create, new_app, sync_client, wait_ok
from _waiting import eventually

from flyjobs.emulator import EmulatorConfig, serve_in_thread

# The machine prints its pid and its child's pid, so the test can look for both afterwards.
PARENT_AND_CHILD = [
    "python",
    "-c",
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(os.getpid(), child.pid, flush=True)\n"
    "time.sleep(600)",
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still has a pid; it is dead for our purposes.
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False


def _pids(c: httpx.Client, app: str, machine_id: str) -> list[int]:
    for _ in range(200):
        data = c.get(f"/api/v1/apps/{app}/logs", params={"instance": machine_id}).json()["data"]
        if data:
            return [int(pid) for pid in data[0]["attributes"]["message"].split()]
        time.sleep(0.02)
    raise AssertionError("the machine never printed its pids")


def test_stopping_the_emulator_kills_machine_processes(tmp_path: Path) -> None:
    with (
        serve_in_thread(EmulatorConfig(tokens=["t"], data_dir=tmp_path)) as emu,
        sync_client(emu) as c,
    ):
        app = new_app(c)
        machine = create(c, app, PARENT_AND_CHILD)
        wait_ok(c, app, machine["id"], "started")
        pids = _pids(c, app, machine["id"])
        assert all(_alive(pid) for pid in pids)
    assert not any(_alive(pid) for pid in pids)
    assert (tmp_path / app / machine["id"] / "root").is_dir()  # a given data_dir is kept


def test_a_machine_exit_takes_its_children_along(client: httpx.Client, app: str) -> None:
    machine = create(client, app, PARENT_AND_CHILD, restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "started")
    parent, child = _pids(client, app, machine["id"])
    os.kill(parent, signal.SIGKILL)
    wait_ok(client, app, machine["id"], "stopped")
    eventually(lambda: not _alive(child), "the child ended with its machine")


def test_temporary_data_dir_is_removed() -> None:
    with serve_in_thread(EmulatorConfig(tokens=["t"])) as emu:
        data_dir = emu.data_dir
        assert data_dir.is_dir()
    assert not data_dir.exists()


def test_port_in_use_is_an_error() -> None:
    with serve_in_thread(EmulatorConfig(tokens=["t"])) as emu:
        port = int(emu.url.rsplit(":", 1)[1])
        with pytest.raises(OSError), serve_in_thread(EmulatorConfig(tokens=["t"], port=port)):
            pass


def test_dev_command_serves_until_sigterm(tmp_path: Path) -> None:
    code = "from flyjobs.emulator import dev_command; dev_command()"
    argv = [
        sys.executable,
        "-c",
        code,
        "--port",
        "0",
        "--data-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "FLYJOBS_DEV_TOKEN": "dev-token"}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline().strip()
            assert banner.startswith("flyjobs emulator listening on http://127.0.0.1:")
            url = banner.rsplit(" ", 1)[1]
            hint = process.stdout.readline().strip()
            assert hint == f'export FLY_API_HOSTNAME={url} FLY_API_TOKEN="$FLYJOBS_DEV_TOKEN"'
            with httpx.Client(base_url=url, headers={"Authorization": "Bearer dev-token"}) as c:
                app = new_app(c)
                machine = create(c, app, PARENT_AND_CHILD)
                wait_ok(c, app, machine["id"], "started")
                pids = _pids(c, app, machine["id"])
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
    assert not any(_alive(pid) for pid in pids)


def test_dev_command_help_lists_every_knob() -> None:
    from click.testing import CliRunner

    from flyjobs.emulator import dev_command

    result = CliRunner().invoke(dev_command, ["--help"])
    assert result.exit_code == 0
    for option in EmulatorConfig.model_fields:
        renamed = {
            "tokens": "token",
            "image_commands": "image-command",
            "apps": "app",
            "regions": "region",
            "failing_images": "failing-image",
        }
        flag = renamed.get(option, option.replace("_", "-"))
        assert f"--{flag} " in result.output, option
