"""One test per machine state transition, as Fly makes them."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from _emu_helpers import (
    SLEEP,
    STUBBORN,
    create,
    exit_event,
    get,
    new_app,
    states_seen,
    sync_client,
    wait,
    wait_ok,
)

from flyjobs.emulator import RunningEmulator


def test_skip_launch_stays_created(client: httpx.Client, app: str) -> None:
    r = client.post(
        f"/v1/apps/{app}/machines",
        json={"config": {"image": "x", "init": {"exec": SLEEP}}, "skip_launch": True},
    )
    machine = r.json()
    assert machine["state"] == "created"
    assert wait(client, app, machine["id"], "started", timeout=1).status_code == 408
    assert get(client, app, machine["id"])["state"] == "created"


def test_created_to_starting_to_started(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator(boot_delay_s=0.3)) as c:
        app = new_app(c)
        machine = create(c, app, SLEEP)
        assert machine["state"] == "created"
        wait_ok(c, app, machine["id"], "starting")
        assert get(c, app, machine["id"])["state"] == "starting"
        wait_ok(c, app, machine["id"], "started")
        assert states_seen(get(c, app, machine["id"])) == [
            ("launch", "created"),
            ("start", "started"),
        ]


def test_started_to_stopping_to_stopped(client: httpx.Client, app: str) -> None:
    machine = create(client, app, STUBBORN)
    wait_ok(client, app, machine["id"], "started")
    _wait_for_output(client, app, machine["id"], "ready")
    r = client.post(
        f"/v1/apps/{app}/machines/{machine['id']}/stop", json={"signal": "SIGTERM", "timeout": "1s"}
    )
    assert r.status_code == 200
    assert get(client, app, machine["id"])["state"] == "stopping"
    wait_ok(client, app, machine["id"], "stopped")
    event = exit_event(get(client, app, machine["id"]))
    assert event["requested_stop"] is True
    assert event["signal"] == 9  # ignored SIGTERM, so SIGKILL after the timeout
    assert event["exit_code"] == 137


def test_process_exit_goes_stopping_stopped(client: httpx.Client, app: str) -> None:
    machine = create(client, app, ["python", "-c", "raise SystemExit(3)"], restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    got = get(client, app, machine["id"])
    assert got["state"] == "stopped"
    assert exit_event(got)["exit_code"] == 3
    assert exit_event(got)["requested_stop"] is False


def test_stopped_to_started(client: httpx.Client, app: str) -> None:
    machine = create(client, app, ["python", "-c", "pass"], restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    r = client.post(f"/v1/apps/{app}/machines/{machine['id']}/start")
    assert r.json()["previous_state"] == "stopped"
    wait_ok(client, app, machine["id"], "started")
    wait_ok(client, app, machine["id"], "stopped")
    exits = [e for e in get(client, app, machine["id"])["events"] if e["type"] == "exit"]
    assert len(exits) == 2


def test_update_goes_through_replacing(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    wait_ok(client, app, machine["id"], "started")
    r = client.post(
        f"/v1/apps/{app}/machines/{machine['id']}",
        json={
            "config": {"image": "other", "init": {"exec": SLEEP}},
            "current_version": machine["version"],
        },
    )
    assert r.status_code == 200
    assert r.json()["version"] != machine["version"]
    wait_ok(client, app, machine["id"], "started")
    seen = states_seen(get(client, app, machine["id"]))
    assert ("update", "replacing") in seen
    assert seen[-1] == ("start", "started")
    assert (
        wait(client, app, machine["id"], "stopped", version=machine["version"]).status_code == 200
    )


def test_update_refuses_stale_version_and_immutable_fields(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    config = {"image": "x", "init": {"exec": SLEEP}}
    stale = "01AAAAAAAAAAAAAAAAAAAAAAAA"
    assert client.post(base, json={"config": config, "current_version": stale}).status_code == 409
    assert client.post(base, json={"config": config, "name": "renamed"}).status_code == 400
    assert client.post(base, json={"config": config, "region": "ams"}).status_code == 400
    assert client.post(base, json={"config": {"env": {}}}).status_code == 400


def test_delete_goes_destroying_destroyed(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    wait_ok(client, app, machine["id"], "started")
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    assert client.delete(base).status_code == 409
    assert client.delete(base, params={"kill": "true"}).status_code == 200
    got = get(client, app, machine["id"])
    assert got["state"] == "destroyed"
    assert states_seen(got)[-2:] == [("exit", "stopped"), ("destroy", "destroyed")]
    assert client.delete(base).status_code == 404
    assert client.post(f"{base}/start").status_code == 404


def test_delete_stopped_without_force(client: httpx.Client, app: str) -> None:
    machine = create(client, app, ["python", "-c", "pass"], restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    assert client.delete(f"/v1/apps/{app}/machines/{machine['id']}").status_code == 200
    wait_ok(client, app, machine["id"], "destroyed")


def test_restart_runs_again(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    wait_ok(client, app, machine["id"], "started")
    r = client.post(
        f"/v1/apps/{app}/machines/{machine['id']}/restart", params={"signal": "SIGKILL"}
    )
    assert r.status_code == 200
    wait_ok(client, app, machine["id"], "started")
    got = get(client, app, machine["id"])
    assert ("restart", "stopping") in states_seen(got)
    assert states_seen(got)[-1] == ("start", "started")
    assert exit_event(got)["requested_stop"] is True


def test_signal_reaches_the_process(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP, restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "started")
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    assert client.post(f"{base}/signal", json={"signal": "SIGUSR1"}).status_code == 200
    wait_ok(client, app, machine["id"], "stopped")
    assert exit_event(get(client, app, machine["id"]))["signal"] == 10
    assert client.post(f"{base}/signal", json={"signal": "SIGUSR1"}).status_code == 409
    assert client.post(f"{base}/signal", json={"signal": "SIGNOPE"}).status_code == 400


def test_start_of_started_machine_is_harmless(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    wait_ok(client, app, machine["id"], "started")
    r = client.post(f"/v1/apps/{app}/machines/{machine['id']}/start")
    assert r.json()["previous_state"] == "started"


def _wait_for_output(client: httpx.Client, app: str, machine_id: str, text: str) -> None:
    for _ in range(200):
        lines = client.get(f"/api/v1/apps/{app}/logs", params={"instance": machine_id}).json()[
            "data"
        ]
        if any(entry["attributes"]["message"] == text for entry in lines):
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never printed")
