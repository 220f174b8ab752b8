"""Where the emulator follows Fly's behaviour, each test citing its source.

Sources: the Machines API spec (tests/spec/machines-openapi.yaml), superfly/fly-go @22d6e518
(``flaps/``, ``machine_types.go``) and Fly's docs (fly.io/docs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil
from _emu_helpers import SLEEP, create, get, new_app, sync_client, wait, wait_ok

from flyjobs.emulator import RunningEmulator

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
    assert client.post(f"{base}/suspend").status_code == 200
    wait_ok(client, app, machine["id"], "suspended")
    assert client.post(f"{base}/stop").status_code == 200
    wait_ok(client, app, machine["id"], "stopped")

    def shown() -> list[dict[str, Any]]:
        return list(client.get(f"{base}/events", params={"limit": 50}).json())

    # Updates of a stopped machine with skip_launch add an event each, and run nothing.
    update = {"config": {"image": "flyjobs-test", "init": {"exec": SLEEP}}, "skip_launch": True}
    while "suspended" in {e["status"] for e in shown()}:  # until it is out of sight
        assert client.post(base, json=update).status_code == 200
    assert len(shown()) == 50
    assert len(get(client, app, machine["id"])["events"]) == 50
    assert client.get(f"{base}/events", params={"limit": 51}).status_code == 400
    # The only "suspended" is older than every event shown, and newer than first_event.
    r = wait(client, app, machine["id"], "suspended", timeout=1, from_event_id=first_event)
    assert r.status_code == 200 and r.json()["state"] == "suspended"


def test_suspend_freezes_the_process_and_start_resumes_it(client: httpx.Client, app: str) -> None:
    # fly-go flaps/flaps_machines.go Suspend (POST …/suspend) and spec GET …/wait
    # state=suspended; docs machines/machine-states: suspended is a persistent state, and a
    # start resumes a suspended machine from its snapshot (the same process here).
    machine = create(client, app, SLEEP)
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    wait_ok(client, app, machine["id"], "started")
    (process,) = client.get(f"{base}/ps").json()
    assert client.post(f"{base}/suspend").status_code == 200
    wait_ok(client, app, machine["id"], "suspended")
    assert get(client, app, machine["id"])["state"] == "suspended"
    assert _settles_at(process["pid"], psutil.STATUS_STOPPED)
    assert client.post(f"{base}/suspend").status_code == 409  # only a started machine
    started = client.post(f"{base}/start").json()
    assert started["previous_state"] == "suspended"
    wait_ok(client, app, machine["id"], "started")
    assert _settles_at(process["pid"], psutil.STATUS_SLEEPING)
    assert [p["pid"] for p in client.get(f"{base}/ps").json()] == [process["pid"]]
    # Stopping a suspended machine (docs: "discards its snapshot") stops it.
    assert client.post(f"{base}/suspend").status_code == 200
    assert client.post(f"{base}/stop").status_code == 200
    wait_ok(client, app, machine["id"], "stopped")
    assert not psutil.pid_exists(process["pid"]) or (
        psutil.Process(process["pid"]).status() == psutil.STATUS_ZOMBIE
    )


def _settles_at(pid: int, status: str) -> bool:
    """Whether process ``pid`` reaches ``status`` (a signal takes effect when the process is
    next scheduled, later under load)."""
    for _ in range(500):
        if psutil.Process(pid).status() == status:
            return True
        time.sleep(0.01)
    return False


def test_cordon_uncordon_and_skip_service_registration(client: httpx.Client, app: str) -> None:
    # fly-go flaps/flaps_machines.go Cordon/Uncordon (POST …/cordon, …/uncordon); fly-go
    # LaunchMachineInput.SkipServiceRegistration creates the machine cordoned.
    body = {"config": {"image": "x"}, "skip_launch": True, "skip_service_registration": True}
    machine = client.post(MACHINES.format(app=app), json=body).json()
    assert machine["cordoned"] is True
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    assert client.post(f"{base}/uncordon").status_code == 200
    assert get(client, app, machine["id"])["cordoned"] is False
    assert client.post(f"{base}/cordon").status_code == 200
    assert get(client, app, machine["id"])["cordoned"] is True
    plain = create(client, app, SLEEP)
    assert plain["cordoned"] is False


def test_ps_lists_the_machine_processes(client: httpx.Client, app: str) -> None:
    # fly-go flaps/flaps_machines.go GetProcesses and machine_types.go ProcessStat: pid,
    # stime, rtime, command, directory, cpu, rss, listen_sockets; spec: 400 on a bad request.
    listen = (
        "import socket, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "time.sleep(600)"
    )
    machine = create(client, app, ["python", "-c", listen])
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    wait_ok(client, app, machine["id"], "started")
    for _ in range(200):
        (stat,) = client.get(f"{base}/ps").json()
        if stat["listen_sockets"]:
            break
        time.sleep(0.02)
    assert "socket.socket()" in stat["command"]
    assert stat["rss"] > 0 and stat["stime"] > 0 and stat["directory"]
    assert [s["proto"] for s in stat["listen_sockets"]] == ["tcp"]
    assert stat["listen_sockets"][0]["address"].startswith("127.0.0.1:")
    assert client.get(f"{base}/ps", params={"sort_by": "rss", "order": "desc"}).status_code == 200
    assert client.get(f"{base}/ps", params={"sort_by": "colour"}).status_code == 400
    assert client.post(f"{base}/stop").status_code == 200
    wait_ok(client, app, machine["id"], "stopped")
    assert client.get(f"{base}/ps").status_code == 400


def test_restarts_by_policy_back_off(make_emulator: Callable[..., RunningEmulator]) -> None:
    # docs machines/guides-examples/machine-restart-policy: `always` restarts a machine
    # whatever its exit; flyd waits between restarts (its delays are not documented): each
    # restart here waits restart_backoff_s, doubling, at most restart_backoff_max_s.
    emu = make_emulator(restart_backoff_s=0.2, restart_backoff_max_s=0.4)
    with sync_client(emu) as c:
        app = new_app(c)
        machine = create(c, app, ["python", "-c", "pass"], restart={"policy": "always"})
        base = f"/v1/apps/{app}/machines/{machine['id']}"
        events: list[dict[str, Any]] = []
        for _ in range(400):
            events = get(c, app, machine["id"])["events"][::-1]
            if sum(e["type"] == "start" for e in events) >= 4:
                break
            time.sleep(0.02)
        assert c.post(f"{base}/stop").status_code == 200
    gaps_ms = [
        later["timestamp"] - earlier["timestamp"]
        for earlier, later in zip(events, events[1:], strict=False)
        if earlier["type"] == "exit" and later["type"] == "start"
    ]
    assert len(gaps_ms) >= 3
    assert gaps_ms[0] >= 200 and gaps_ms[1] >= 400 and gaps_ms[2] >= 400


def test_unknown_regions_are_refused(client: httpx.Client, app: str) -> None:
    # Fly places machines only in its regions (docs reference/regions; fly-go
    # flaps/flaps_platform.go GetRegions lists them); the emulator also takes its default.
    body: dict[str, Any] = {"config": {"image": "x"}, "skip_launch": True}
    r = client.post(MACHINES.format(app=app), json={**body, "region": "xyz"})
    assert r.status_code == 400
    assert "xyz" in r.json()["error"] and "iad" in r.json()["error"]
    for region in ("iad", "lcl"):
        made = client.post(MACHINES.format(app=app), json={**body, "region": region})
        assert made.status_code == 200 and made.json()["region"] == region


def test_mounts_of_missing_volumes_are_refused(client: httpx.Client, app: str) -> None:
    # spec fly.MachineMount: `volume` is the ID of an existing volume; the emulator has none,
    # so every mount names a missing one, on create and on update.
    mount = {"volume": "vol_0123456789abcdef", "path": "/data"}
    r = client.post(MACHINES.format(app=app), json={"config": {"image": "x", "mounts": [mount]}})
    assert r.status_code == 404
    assert "vol_0123456789abcdef" in r.json()["error"]
    machine = create(client, app, SLEEP)
    update = {"config": {"image": "x", "mounts": [mount]}}
    r = client.post(f"/v1/apps/{app}/machines/{machine['id']}", json=update)
    assert r.status_code == 404
    assert get(client, app, machine["id"])["version"] == machine["version"]


def test_a_program_that_cannot_start_fails_the_machine_once(client: httpx.Client, app: str) -> None:
    # docs machines/machine-states: `failed` is a persistent state, for a machine whose launch
    # failed; the restart policy (docs machine-restart-policy) restarts exited main processes,
    # and one that never started has not exited: no retries, no `start` event, even `always`.
    machine = create(client, app, ["/nonexistent/program"], restart={"policy": "always"})
    wait_ok(client, app, machine["id"], "failed")
    seen = get(client, app, machine["id"])
    assert [e["type"] for e in seen["events"] if e["type"] in ("start", "exit")] == ["exit"]
    assert seen["events"][0]["request"]["exit_event"]["exit_code"] == 127
