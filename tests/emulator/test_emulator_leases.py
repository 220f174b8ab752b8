"""Leases: acquire (201, Fly's envelope), refresh with the nonce, 409 while held, stale
nonces, expiry, release, and create with ``lease_ttl``."""

from __future__ import annotations

import time

import httpx
from _emu_helpers import SLEEP, create, wait_ok

NONCE = "fly-machine-lease-nonce"


def _lease(client: httpx.Client, app: str, machine_id: str, **kwargs: object) -> httpx.Response:
    return client.post(f"/v1/apps/{app}/machines/{machine_id}/lease", **kwargs)  # type: ignore[arg-type]


def test_held_lease_blocks_others_and_changes_without_nonce(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    r = _lease(client, app, machine["id"], json={"ttl": 60, "description": "deploy"})
    assert r.status_code == 201
    data = r.json()["data"]
    assert data["description"] == "deploy"
    assert data["version"] == machine["version"]
    assert data["expires_at"] >= int(time.time()) + 58
    nonce = data["nonce"]
    assert _lease(client, app, machine["id"], json={"ttl": 60}).status_code == 409
    wait_ok(client, app, machine["id"], "started")
    for method, path, body in (
        ("POST", "/stop", None),
        ("POST", "/restart", None),
        ("POST", "", {"config": {"image": "x"}}),
        ("DELETE", "", None),
    ):
        r = client.request(method, base + path, json=body)
        assert r.status_code == 409, (method, path, r.text)
        r = client.request(method, base + path, json=body, headers={NONCE: "stale0000000"})
        assert r.status_code == 409, (method, path, r.text)
    assert (
        client.post(f"{base}/metadata/k", json={"value": "v"}, headers={NONCE: nonce}).status_code
        == 204
    )
    lease = client.get(f"{base}/lease").json()
    assert lease["data"]["nonce"] == nonce
    with_lease = client.get(base, params={"include_leases": "true"}).json()
    assert with_lease["lease"]["owner"] == data["owner"]


def test_refresh_with_nonce_and_query_ttl(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    first = _lease(client, app, machine["id"], params={"ttl": 5}).json()["data"]
    refreshed = _lease(
        client, app, machine["id"], params={"ttl": 100}, headers={NONCE: first["nonce"]}
    )
    assert refreshed.status_code == 201
    assert refreshed.json()["data"]["nonce"] == first["nonce"]
    assert refreshed.json()["data"]["expires_at"] > first["expires_at"]


def test_lease_expires(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    first = _lease(client, app, machine["id"], json={"ttl": 1}).json()["data"]
    time.sleep(1.1)
    assert client.get(f"/v1/apps/{app}/machines/{machine['id']}/lease").status_code == 404
    second = _lease(client, app, machine["id"], json={"ttl": 30})
    assert second.status_code == 201
    assert second.json()["data"]["nonce"] != first["nonce"]
    r = client.post(
        f"/v1/apps/{app}/machines/{machine['id']}/stop", headers={NONCE: first["nonce"]}
    )
    assert r.status_code == 409


def test_release_needs_the_nonce(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    nonce = _lease(client, app, machine["id"], json={"ttl": 30}).json()["data"]["nonce"]
    assert client.delete(f"{base}/lease").status_code == 409
    assert client.delete(f"{base}/lease", headers={NONCE: nonce}).status_code == 200
    assert client.delete(f"{base}/lease", headers={NONCE: nonce}).status_code == 404
    assert client.post(f"{base}/stop").status_code == 200


def test_create_with_lease_ttl_returns_nonce(client: httpx.Client, app: str) -> None:
    r = client.post(
        f"/v1/apps/{app}/machines",
        json={"config": {"image": "x", "init": {"exec": SLEEP}}, "lease_ttl": 30},
    )
    machine = r.json()
    assert len(machine["nonce"]) == 12
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    assert client.delete(base, params={"force": "true"}).status_code == 409
    assert (
        client.delete(base, params={"force": "true"}, headers={NONCE: machine["nonce"]}).status_code
        == 200
    )


def test_a_lease_too_long_to_date_is_refused_and_others_still_get_a_409(
    client: httpx.Client, app: str
) -> None:
    """A ttl whose expiry is past any printable date is a 400 (it once made every later lease
    request on the machine a 500, when the 409's message formatted that expiry)."""
    machine = create(client, app, SLEEP)
    for ttl in (10**12, 10**20, 0, -5):
        r = _lease(client, app, machine["id"], json={"ttl": ttl})
        assert r.status_code == 400, (ttl, r.text)
        assert "ttl" in r.json()["error"]
    r = client.post(
        f"/v1/apps/{app}/machines",
        json={"config": {"image": "x", "init": {"exec": SLEEP}}, "lease_ttl": 10**12},
    )
    assert r.status_code == 400 and "lease_ttl" in r.json()["error"]
    assert _lease(client, app, machine["id"], json={"ttl": 3600 * 24 * 365}).status_code == 201
    held = _lease(client, app, machine["id"], json={})
    assert held.status_code == 409 and "lease currently held" in held.json()["message"]
    listed = client.get(f"/v1/apps/{app}/machines").json()
    assert [m["id"] for m in listed] == [machine["id"]], "the refused create made a machine"
