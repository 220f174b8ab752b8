"""Where the emulator follows Fly's behaviour, each test citing its source.

Sources: the Machines API spec (tests/spec/machines-openapi.yaml), superfly/fly-go @22d6e518
(``flaps/``, ``machine_types.go``) and Fly's docs (fly.io/docs).
"""

from __future__ import annotations

import httpx
from _emu_helpers import SLEEP, create, get, new_app, wait, wait_ok

MACHINES = "/v1/apps/{app}/machines"


def test_deleting_an_app_destroys_its_running_machines(client: httpx.Client) -> None:
    # The spec's DELETE /v1/apps/{app_name} takes no parameter and answers 202; fly-go's
    # flaps/flaps_apps.go DeleteApp sends none, and `fly apps destroy` deletes apps that
    # still run machines ("force=true" in the docs only makes it immediate).
    app = new_app(client)
    machine = create(client, app, SLEEP)
    wait_ok(client, app, machine["id"], "started")
    assert client.delete(f"/v1/apps/{app}").status_code == 202
    assert client.get(f"/v1/apps/{app}").status_code == 404
    assert client.get(f"/v1/apps/{app}/machines/{machine['id']}").status_code == 404


def test_updating_a_stopped_machine_starts_the_new_version(client: httpx.Client, app: str) -> None:
    # docs machines/flyctl/fly-machine-update: update "recreates the Machine with the new
    # config, and, by default, starts it"; skip_launch (fly-go LaunchMachineInput.SkipLaunch)
    # leaves it as it was.
    machine = create(client, app, SLEEP)
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    wait_ok(client, app, machine["id"], "started")
    assert client.post(f"{base}/stop").status_code == 200
    wait_ok(client, app, machine["id"], "stopped")
    config = {"image": "flyjobs-test", "init": {"exec": SLEEP}, "env": {"V": "2"}}
    updated = client.post(base, json={"config": config})
    assert updated.status_code == 200
    assert wait(client, app, machine["id"], "started", version=updated.json()["version"]).json()[
        "ok"
    ]
    assert client.post(f"{base}/stop").status_code == 200
    wait_ok(client, app, machine["id"], "stopped")
    config["env"] = {"V": "3"}
    again = client.post(base, json={"config": config, "skip_launch": True}).json()
    assert again["state"] == "stopped"
    assert get(client, app, machine["id"])["state"] == "stopped"


def test_get_with_an_old_version_shows_that_version(client: httpx.Client, app: str) -> None:
    # spec GET /v1/apps/{app_name}/machines/{machine_id}: `version` selects the version shown.
    machine = create(client, app, SLEEP, env={"V": "1"})
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    config = {"image": "flyjobs-test", "init": {"exec": SLEEP}, "env": {"V": "2"}}
    new = client.post(base, json={"config": config, "skip_launch": True}).json()
    old = client.get(base, params={"version": machine["version"]}).json()
    assert (old["version"], old["instance_id"]) == (machine["version"], machine["version"])
    assert old["config"]["env"] == {"V": "1"}
    current = client.get(base).json()
    assert (current["version"], current["config"]["env"]) == (new["version"], {"V": "2"})


def test_lease_ttl_on_update_takes_a_lease(client: httpx.Client, app: str) -> None:
    # fly-go machine_types.go: LaunchMachineInput.LeaseTTL is the body of both Launch and
    # Update (flaps/flaps_machines.go); the answer carries the lease's nonce, as on create.
    machine = create(client, app, SLEEP)
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    config = {"image": "flyjobs-test", "init": {"exec": SLEEP}}
    updated = client.post(base, json={"config": config, "lease_ttl": 30})
    assert updated.status_code == 200
    nonce = updated.json()["nonce"]
    lease = client.get(f"{base}/lease").json()["data"]
    assert lease["nonce"] == nonce
    # Held: a change without the nonce is refused, with it accepted.
    assert client.post(f"{base}/stop").status_code == 409
    held = {"fly-machine-lease-nonce": nonce}
    assert client.post(f"{base}/stop", headers=held).status_code == 200


def test_list_limit_is_1_to_1000(client: httpx.Client, app: str) -> None:
    # spec GET /v1/apps/{app_name}/machines: limit "must be between 1 and 1000".
    for limit in (0, 1001):
        r = client.get(MACHINES.format(app=app), params={"limit": limit})
        assert r.status_code == 400
        assert "between 1 and 1000" in r.json()["error"]
    assert client.get(MACHINES.format(app=app), params={"limit": 1}).status_code == 200


def test_invalid_cursor_is_400(client: httpx.Client, app: str) -> None:
    # spec: cursor is the "value of the fly-next-cursor response header from the previous
    # page", and the list answers 400 for a bad request; anything else is not a page.
    for cursor in ("nonsense", "bm90IGpzb24", "WyJhIiwgMV0"):
        r = client.get(MACHINES.format(app=app), params={"limit": 5, "cursor": cursor})
        assert r.status_code == 400, cursor
        assert "cursor" in r.json()["error"]


def test_pages_follow_even_when_the_last_machine_has_gone(client: httpx.Client, app: str) -> None:
    # spec: the next page comes from the fly-next-cursor header (limit 1-1000).
    body = {"config": {"image": "x"}, "skip_launch": True}
    ids = [client.post(MACHINES.format(app=app), json=body).json()["id"] for _ in range(5)]
    first = client.get(MACHINES.format(app=app), params={"limit": 2})
    assert [m["id"] for m in first.json()] == ids[:2]
    cursor = first.headers["fly-next-cursor"]
    assert client.delete(f"/v1/apps/{app}/machines/{ids[1]}").status_code == 200
    rest = client.get(MACHINES.format(app=app), params={"limit": 10, "cursor": cursor})
    assert [m["id"] for m in rest.json()] == ids[2:]
    assert "fly-next-cursor" not in rest.headers


def test_events_show_the_newest_50_and_waits_see_further(client: httpx.Client, app: str) -> None:
    # spec GET …/events: limit "max of 50"; a wait's from_event_id (spec GET …/wait) still
    # finds a state reached after an event the API no longer shows.
    machine = create(client, app, SLEEP)
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    wait_ok(client, app, machine["id"], "started")
    first_event = get(client, app, machine["id"])["events"][-1]["id"]
    assert client.post(f"{base}/stop").status_code == 200
    wait_ok(client, app, machine["id"], "stopped")
    while len(client.get(f"{base}/events", params={"limit": 50}).json()) < 50:
        assert client.post(f"{base}/start").status_code == 200
        wait_ok(client, app, machine["id"], "started")
        assert client.post(f"{base}/stop").status_code == 200
        wait_ok(client, app, machine["id"], "stopped")
    assert client.post(f"{base}/start").status_code == 200
    wait_ok(client, app, machine["id"], "started")
    assert len(get(client, app, machine["id"])["events"]) == 50
    shown = {e["id"] for e in client.get(f"{base}/events", params={"limit": 50}).json()}
    assert first_event not in shown
    assert client.get(f"{base}/events", params={"limit": 51}).status_code == 400
    # "stopped" was reached after the first event, long before the 50 shown ones.
    r = client.post(f"{base}/stop")
    assert r.status_code == 200
    r = wait(client, app, machine["id"], "stopped", from_event_id=first_event)
    assert r.status_code == 200 and r.json()["state"] == "stopped"
