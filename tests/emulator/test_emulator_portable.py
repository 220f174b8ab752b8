"""Without pidfds and /proc (macOS), machines still exit, report codes and are OOM-killed.

Linux has both, so the fallbacks are switched on by hand; the emulator runs in a thread of this
process and reads the switches at each spawn and each memory poll.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from _emu_helpers import create, exit_event, get, new_app, sync_client, wait_ok

from flyjobs.emulator import RunningEmulator, _process

HOG = ["python", "-c", "import time; x = b'x' * (400 << 20); time.sleep(30)"]


@pytest.fixture
def portable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_process, "USE_PIDFD", False)
    monkeypatch.setattr(_process, "USE_PROC", False)


@pytest.mark.slow
@pytest.mark.usefixtures("portable")
def test_exit_codes_and_oom_without_pidfd_or_proc(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = make_emulator()
    with sync_client(emulator) as client:
        app = new_app(client)
        before = threading.active_count()
        machine = create(client, app, ["python", "-c", "raise SystemExit(3)"], auto_destroy=False)
        wait_ok(client, app, machine["id"], "stopped")
        assert exit_event(get(client, app, machine["id"]))["exit_code"] == 3
        hog = create(
            client,
            app,
            HOG,
            guest={"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            restart={"policy": "no"},
        )
        wait_ok(client, app, hog["id"], "stopped")
        assert exit_event(get(client, app, hog["id"]))["oom_killed"] is True
        # The waiting threads end with their processes.
        assert threading.active_count() <= before + 2
