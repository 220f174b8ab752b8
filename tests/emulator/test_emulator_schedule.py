"""``config.schedule``: runs at its interval from creation (``time_scale`` makes an hour short);
scheduled machines cannot be started through the API."""

from __future__ import annotations

from collections.abc import Callable

from _emu_helpers import create, get, new_app, sync_client, wait_ok
from _waiting import eventually

from flyjobs.emulator import RunningEmulator

HOURLY_EVERY_HALF_SECOND = 7200.0


def test_hourly_schedule_runs_every_scaled_hour(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    with sync_client(make_emulator(time_scale=HOURLY_EVERY_HALF_SECOND)) as c:
        app = new_app(c)
        machine = create(c, app, ["python", "-c", "print('tick')"], schedule="hourly")
        wait_ok(c, app, machine["id"], "stopped")

        def runs() -> int:
            return sum(e["type"] == "exit" for e in get(c, app, machine["id"])["events"])

        eventually(lambda: runs() >= 3, "the schedule ran again, twice")
        starts = [
            e["timestamp"]
            for e in reversed(get(c, app, machine["id"])["events"])
            if e["type"] == "start"
        ]
        gaps = [b - a for a, b in zip(starts[1:], starts[2:], strict=False)]
        assert all(400 <= gap <= 800 for gap in gaps), gaps


def test_scheduled_machine_cannot_be_started(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator()) as c:
        app = new_app(c)
        machine = create(c, app, ["python", "-c", "pass"], schedule="daily")
        wait_ok(c, app, machine["id"], "stopped")
        r = c.post(f"/v1/apps/{app}/machines/{machine['id']}/start")
        assert r.status_code == 400
        assert "schedule" in r.json()["error"]
        assert get(c, app, machine["id"])["state"] == "stopped"


def test_unknown_schedule_is_400(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator()) as c:
        app = new_app(c)
        r = c.post(
            f"/v1/apps/{app}/machines", json={"config": {"image": "x", "schedule": "every-minute"}}
        )
        assert r.status_code == 400
