"""Every route needs ``Authorization: Bearer <token>``; without a valid one: 401, nothing done."""

from __future__ import annotations

import httpx
import pytest
from _emu_helpers import SLEEP, create
from _spec import check_response

from flyjobs.emulator import RunningEmulator

ROUTES = [
    ("GET", "/v1/apps?org_slug=personal"),
    ("POST", "/v1/apps"),
    ("GET", "/v1/apps/{app}"),
    ("DELETE", "/v1/apps/{app}?force=true"),
    ("GET", "/v1/apps/{app}/machines"),
    ("POST", "/v1/apps/{app}/machines"),
    ("GET", "/v1/apps/{app}/machines/{id}"),
    ("POST", "/v1/apps/{app}/machines/{id}"),
    ("DELETE", "/v1/apps/{app}/machines/{id}?force=true"),
    ("POST", "/v1/apps/{app}/machines/{id}/stop"),
    ("POST", "/v1/apps/{app}/machines/{id}/start"),
    ("POST", "/v1/apps/{app}/machines/{id}/restart"),
    ("POST", "/v1/apps/{app}/machines/{id}/signal"),
    ("GET", "/v1/apps/{app}/machines/{id}/wait"),
    ("GET", "/v1/apps/{app}/machines/{id}/events"),
    ("POST", "/v1/apps/{app}/machines/{id}/exec"),
    ("GET", "/v1/apps/{app}/machines/{id}/metadata"),
    ("PATCH", "/v1/apps/{app}/machines/{id}/metadata"),
    ("POST", "/v1/apps/{app}/machines/{id}/metadata/k"),
    ("DELETE", "/v1/apps/{app}/machines/{id}/metadata/k"),
    ("POST", "/v1/apps/{app}/machines/{id}/lease"),
    ("DELETE", "/v1/apps/{app}/machines/{id}/lease"),
    ("GET", "/v1/apps/{app}/secrets"),
    ("POST", "/v1/apps/{app}/secrets"),
    ("DELETE", "/v1/apps/{app}/secrets/S"),
    ("GET", "/api/v1/apps/{app}/logs"),
]
BAD_HEADERS = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic x"},
]


@pytest.mark.parametrize("headers", BAD_HEADERS)
def test_every_route_refuses_a_missing_or_bad_token(
    emulator: RunningEmulator, client: httpx.Client, app: str, headers: dict[str, str]
) -> None:
    machine = create(client, app, SLEEP)
    body = {
        "name": "x",
        "config": {"image": "x"},
        "signal": "SIGKILL",
        "command": ["true"],
        "values": {"A": "b"},
    }
    with httpx.Client(
        base_url=emulator.url, headers=headers, event_hooks={"response": [check_response]}
    ) as anonymous:
        for method, path in ROUTES:
            url = path.format(app=app, id=machine["id"])
            r = anonymous.request(method, url, json=body if method != "GET" else None)
            assert r.status_code == 401, (method, url)
            assert r.json()["error"]
    assert client.get(f"/v1/apps/{app}/machines/{machine['id']}").json()["state"] == "started"
    assert client.get(f"/v1/apps/{app}/secrets").json()["secrets"] == []
    assert client.get("/v1/apps/x").status_code == 404


def test_several_tokens_and_flyv1_style(make_emulator: object) -> None:
    emu: RunningEmulator = make_emulator(tokens=["first", "FlyV1 fm2_second"])  # type: ignore[operator]
    assert emu.token == "first"
    accepted = ("Bearer first", "Bearer FlyV1 fm2_second", "FlyV1 fm2_second", "FlyV1 first")
    for header in (*accepted, "Bearer fm2_second"):
        r = httpx.get(
            f"{emu.url}/v1/apps", params={"org_slug": "personal"}, headers={"Authorization": header}
        )
        assert r.status_code == 200, header
    for header in ("FlyV1 fm2_third", "Bearer", "FlyV1"):
        r = httpx.get(
            f"{emu.url}/v1/apps", params={"org_slug": "personal"}, headers={"Authorization": header}
        )
        assert r.status_code == 401, header


def test_a_token_is_generated_when_none_is_given(make_emulator: object) -> None:
    emu: RunningEmulator = make_emulator(tokens=[])  # type: ignore[operator]
    assert len(emu.token) >= 20
    r = httpx.get(
        f"{emu.url}/v1/apps",
        params={"org_slug": "personal"},
        headers={"Authorization": f"Bearer {emu.token}"},
    )
    assert r.status_code == 200
