"""Every request example of Fly's "Working with the Machines API" guide, replayed over HTTP.

Status codes and response shapes are the guide's; each response is also checked against the
official spec by the client's response hook.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from _emu_helpers import get, wait_ok

GUIDE_MACHINE = {
    "name": "quirky-machine",
    "config": {
        "image": "flyio/fastify-functions",
        "env": {"APP_ENV": "production"},
        "services": [
            {
                "ports": [
                    {"port": 443, "handlers": ["tls", "http"]},
                    {"port": 80, "handlers": ["http"]},
                ],
                "protocol": "tcp",
                "internal_port": 8080,
            }
        ],
        "checks": {
            "httpget": {
                "type": "http",
                "port": 8080,
                "method": "GET",
                "path": "/",
                "interval": "15s",
                "timeout": "10s",
            }
        },
    },
}
MACHINE_KEYS = {
    "id",
    "name",
    "state",
    "region",
    "instance_id",
    "private_ip",
    "config",
    "image_ref",
    "created_at",
}


def guide_app(client: httpx.Client) -> str:
    name = f"my-app-name-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/apps", json={"app_name": name, "org_slug": "personal"})
    assert r.status_code == 201
    return name


def test_create_get_and_delete_app(client: httpx.Client) -> None:
    name = guide_app(client)
    r = client.get(f"/v1/apps/{name}")
    assert r.status_code == 200
    assert r.json()["name"] == name
    assert r.json()["organization"]["slug"] == "personal"
    assert client.delete(f"/v1/apps/{name}").status_code == 202
    r = client.delete(f"/v1/apps/{name}")
    assert r.status_code == 404
    assert r.json()["error"] == f'Could not find App "{name}"'


def test_app_name_taken(client: httpx.Client) -> None:
    name = guide_app(client)
    r = client.post("/v1/apps", json={"name": name, "org_slug": "personal"})
    assert r.status_code == 422
    assert r.json()["status"] == "name_taken"


@pytest.mark.parametrize("name", ["../escape", "UPPER", "a/b", "-lead", "x" * 64])
def test_invalid_app_names_are_refused(client: httpx.Client, name: str) -> None:
    r = client.post("/v1/apps", json={"name": name, "org_slug": "personal"})
    assert r.status_code == 422
    assert client.post("/v1/apps", json={"org_slug": "personal"}).status_code == 400


def test_list_apps_by_org(client: httpx.Client) -> None:
    name = guide_app(client)
    r = client.get("/v1/apps", params={"org_slug": "personal"})
    assert r.status_code == 200
    assert name in {app["name"] for app in r.json()["apps"]}
    assert client.get("/v1/apps").status_code == 400


def test_create_machine_example(client: httpx.Client) -> None:
    app = guide_app(client)
    r = client.post(f"/v1/apps/{app}/machines", json=GUIDE_MACHINE)
    assert r.status_code == 200
    machine = r.json()
    assert MACHINE_KEYS <= machine.keys()
    assert machine["name"] == "quirky-machine"
    assert machine["state"] in ("created", "starting")
    assert len(machine["id"]) == 14 and int(machine["id"], 16) >= 0
    assert len(machine["instance_id"]) == 26
    assert machine["private_ip"].startswith("fdaa:")
    assert machine["config"]["env"] == {"APP_ENV": "production"}
    assert machine["config"]["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    assert machine["config"]["checks"]["httpget"]["path"] == "/"
    assert machine["image_ref"]["repository"] == "flyio/fastify-functions"
    assert machine["image_ref"]["tag"] == "latest"
    assert machine["created_at"].endswith("Z")


def test_wait_get_update_stop_start_delete_list(client: httpx.Client) -> None:
    app = guide_app(client)
    machine = client.post(f"/v1/apps/{app}/machines", json=GUIDE_MACHINE).json()
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    wait_ok(client, app, machine["id"], "started")

    r = client.get(base)
    assert r.status_code == 200
    assert r.json()["state"] == "started"
    assert [e["type"] for e in r.json()["events"]][-1] == "launch"

    update = {
        "config": {
            "image": "flyio/fastify-functions",
            "guest": {"memory_mb": 512, "cpus": 2, "cpu_kind": "shared"},
            "env": {"APP_ENV": "production"},
            "services": GUIDE_MACHINE["config"]["services"],  # type: ignore[index]
        }
    }
    r = client.post(base, json=update)
    assert r.status_code == 200
    updated = r.json()
    assert updated["state"] == "starting"
    assert updated["instance_id"] != machine["instance_id"]
    assert updated["config"]["guest"]["memory_mb"] == 512
    wait_ok(client, app, machine["id"], "started")

    r = client.post(f"{base}/stop")
    assert (r.status_code, r.json()) == (200, {"ok": True})
    r = client.get(
        f"{base}/wait", params={"instance_id": updated["instance_id"], "state": "stopped"}
    )
    assert r.status_code == 200
    assert r.json()["ok"] is True

    got = get(client, app, machine["id"])
    assert got["state"] == "stopped"
    exit_types = [e for e in got["events"] if e["type"] == "exit"]
    assert exit_types[0]["status"] == "stopped"
    assert {"exit_code", "exited_at", "oom_killed", "requested_stop", "signal"} <= exit_types[0][
        "request"
    ]["exit_event"].keys()
    assert [e["type"] for e in got["events"]][:2] == ["exit", "stop"]

    r = client.post(f"{base}/start")
    assert (r.status_code, r.json()["previous_state"]) == (200, "stopped")
    wait_ok(client, app, machine["id"], "started")

    r = client.get(f"/v1/apps/{app}/machines")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()] == [machine["id"]]
    assert MACHINE_KEYS <= r.json()[0].keys()

    r = client.delete(f"{base}?force=true")
    assert (r.status_code, r.json()) == (200, {"ok": True})
    assert client.get(f"/v1/apps/{app}/machines").json() == []


def test_lease_example(client: httpx.Client) -> None:
    app = guide_app(client)
    machine = client.post(f"/v1/apps/{app}/machines", json=GUIDE_MACHINE).json()
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    r = client.post(f"{base}/lease", json={"ttl": 500})
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "success"
    assert {"nonce", "expires_at", "owner"} <= body["data"].keys()
    nonce = body["data"]["nonce"]

    r = client.post(f"{base}/lease", json={"ttl": 500})
    assert r.status_code == 409
    conflict = r.json()
    assert conflict["status"] == "error"
    assert conflict["code"] == "invalid"
    assert f"machine ID {machine['id']} lease currently held by" in conflict["message"]
    assert conflict["error"] == conflict["message"]

    wait_ok(client, app, machine["id"], "started")
    r = client.post(f"{base}/stop", headers={"fly-machine-lease-nonce": nonce})
    assert r.status_code == 200
    r = client.delete(f"{base}/lease", headers={"fly-machine-lease-nonce": nonce})
    assert r.status_code == 200
    assert client.get(f"{base}/lease").status_code == 404


def test_unknown_path_is_404(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 404
