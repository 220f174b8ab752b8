"""Restart policies (``no``, ``always``, ``on-failure`` with ``max_retries``) and auto_destroy
with its retention window."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from _emu_helpers import create, exit_event, get, new_app, sync_client, wait, wait_ok
from _waiting import eventually

from flyjobs.emulator import RunningEmulator

FAIL = ["python", "-c", "raise SystemExit(1)"]
SUCCEED = ["python", "-c", "pass"]


def _exits(machine: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in machine["events"] if e["type"] == "exit"]


def test_policy_no_never_restarts(client: httpx.Client, app: str) -> None:
    machine = create(client, app, FAIL, restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    got = get(client, app, machine["id"])
    assert len(_exits(got)) == 1
    assert exit_event(got)["restarting"] is False


def test_on_failure_is_the_default_and_stops_after_max_retries(
    client: httpx.Client, app: str
) -> None:
    machine = create(client, app, FAIL, restart={"max_retries": 2})
    wait_ok(client, app, machine["id"], "stopped")
    got = get(client, app, machine["id"])
    exits = _exits(got)
    assert len(exits) == 3  # the first run and two retries
    assert [e["request"]["exit_event"]["restarting"] for e in exits] == [False, True, True]


def test_default_max_retries_is_ten(make_emulator: Callable[..., RunningEmulator]) -> None:
    # Without the restart backoff's ~10 s between the first and the tenth retry.
    with sync_client(make_emulator(restart_backoff_s=0.001, restart_backoff_max_s=0.001)) as c:
        app = new_app(c)
        machine = create(c, app, FAIL)
        wait_ok(c, app, machine["id"], "stopped")
        assert len(_exits(get(c, app, machine["id"]))) == 11


def test_on_failure_does_not_restart_a_success(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SUCCEED, restart={"policy": "on-failure"})
    wait_ok(client, app, machine["id"], "stopped")
    assert len(_exits(get(client, app, machine["id"]))) == 1


def test_always_restarts_even_a_success(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SUCCEED, restart={"policy": "always"})
    eventually(lambda: len(_exits(get(client, app, machine["id"]))) >= 3, "three runs")
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    assert client.post(f"{base}/stop").status_code == 200
    wait_ok(client, app, machine["id"], "stopped")
    assert get(client, app, machine["id"])["state"] == "stopped"


def test_auto_destroy_goes_to_destroyed_with_exit_event(client: httpx.Client, app: str) -> None:
    machine = create(
        client,
        app,
        ["python", "-c", "raise SystemExit(7)"],
        auto_destroy=True,
        restart={"policy": "no"},
    )
    wait_ok(client, app, machine["id"], "destroyed")
    got = get(client, app, machine["id"])
    assert got["state"] == "destroyed"
    assert exit_event(got)["exit_code"] == 7
    statuses = [e["status"] for e in reversed(got["events"])]
    assert statuses.index("stopped") < statuses.index("destroyed")
    listed = client.get(f"/v1/apps/{app}/machines", params={"include_deleted": "true"}).json()
    assert [m["state"] for m in listed] == ["destroyed"]
    assert client.get(f"/v1/apps/{app}/machines").json() == []


def test_waiting_for_started_on_a_finished_machine_still_succeeds(
    client: httpx.Client, app: str
) -> None:
    machine = create(client, app, SUCCEED, auto_destroy=True, restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "destroyed")
    # The run passed through started; a late waiter is not left hanging.
    assert wait(client, app, machine["id"], "started").json()["state"] == "started"


def test_retention_window(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator(retention_s=0.5)) as c:
        app = new_app(c)
        machine = create(c, app, SUCCEED, auto_destroy=True, restart={"policy": "no"})
        wait_ok(c, app, machine["id"], "destroyed")
        r = wait(c, app, machine["id"], "destroyed")
        assert r.status_code == 200
        assert get(c, app, machine["id"])["state"] == "destroyed"
        logs = c.get(f"/api/v1/apps/{app}/logs", params={"instance": machine["id"]})
        assert logs.status_code == 200
        time.sleep(0.7)
        assert c.get(f"/v1/apps/{app}/machines/{machine['id']}").status_code == 404
        assert wait(c, app, machine["id"], "destroyed").status_code == 404
        assert c.get(f"/v1/apps/{app}/machines", params={"include_deleted": "true"}).json() == []


def test_stopping_an_auto_destroy_machine_destroys_it(client: httpx.Client, app: str) -> None:
    machine = create(
        client, app, ["python", "-c", "import time; time.sleep(600)"], auto_destroy=True
    )
    wait_ok(client, app, machine["id"], "started")
    client.post(f"/v1/apps/{app}/machines/{machine['id']}/stop", json={"signal": "SIGKILL"})
    wait_ok(client, app, machine["id"], "destroyed")
    assert exit_event(get(client, app, machine["id"]))["requested_stop"] is True
