"""``guest.memory_mb`` is enforced: a machine using more is SIGKILLed, ``oom_killed: true``."""

from __future__ import annotations

import httpx
from _emu_helpers import create, exit_event, get, wait_ok

HOG = ["python", "-c", "import time; x = b'x' * (400 << 20); time.sleep(30)"]
CHILD_HOG = [
    "python",
    "-c",
    "import subprocess, sys; subprocess.run([sys.executable, '-c', "
    "\"import time; x = b'x' * (400 << 20); time.sleep(30)\"])",
]


def test_memory_hog_is_oom_killed(client: httpx.Client, app: str) -> None:
    machine = create(
        client,
        app,
        HOG,
        guest={"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
        restart={"policy": "no"},
    )
    wait_ok(client, app, machine["id"], "stopped")
    event = exit_event(get(client, app, machine["id"]))
    assert event["oom_killed"] is True
    assert event["signal"] == 9
    assert event["requested_stop"] is False


def test_memory_of_child_processes_counts(client: httpx.Client, app: str) -> None:
    machine = create(client, app, CHILD_HOG, size="shared-cpu-1x", restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    assert exit_event(get(client, app, machine["id"]))["oom_killed"] is True


def test_within_memory_is_left_alone(client: httpx.Client, app: str) -> None:
    machine = create(
        client,
        app,
        HOG,
        guest={"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024},
        restart={"policy": "no"},
    )
    wait_ok(client, app, machine["id"], "started")
    r = client.get(
        f"/v1/apps/{app}/machines/{machine['id']}/wait", params={"state": "stopped", "timeout": 1}
    )
    assert r.status_code == 408
    client.delete(f"/v1/apps/{app}/machines/{machine['id']}", params={"force": "true"})
