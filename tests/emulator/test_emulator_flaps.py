"""The emulator as Fly's own Go client sees it: requests formed exactly as superfly/fly-go's
``flaps`` forms them (@22d6e518: ``flaps/flaps_machines.go``, ``flaps_machines_wait.go``,
``flaps_apps.go``; bodies as Go's encoding/json marshals ``machine_types.go``'s structs), and
each answer checked as fly-go decodes it (a Go ``time.Time`` needs an RFC 3339 string, a Go
``string`` field refuses a number) and as flyctl reads it (the texts it matches).

docs/fly-fidelity.md records each of these decisions.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _emu_helpers import sync_client

from flyjobs.emulator import RunningEmulator

#: Go's time.Time.UnmarshalJSON: a JSON string in RFC 3339 (fractional seconds allowed).
_GO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")

# What fly-go's structs declare, field by field: "time" is a Go time.Time.
_EXIT_EVENT = {
    "exit_code": int,
    "guest_exit_code": int,
    "guest_signal": int,
    "oom_killed": bool,
    "requested_stop": bool,
    "restarting": bool,
    "signal": int,
    "exited_at": "time",
}
_REQUEST = {"exit_event": _EXIT_EVENT, "restart_count": int}
_EVENT = {"type": str, "status": str, "request": _REQUEST, "source": str, "timestamp": int}
_MACHINE = {
    "id": str,
    "name": str,
    "state": str,
    "region": str,
    "instance_id": str,
    "version": str,
    "private_ip": str,
    "created_at": str,
    "updated_at": str,
    "events": [_EVENT],
    "nonce": str,
    "host_status": str,
    "cordoned": bool,
}
_APP = {
    "id": str,
    "name": str,
    "status": str,
    "network": str,
    "machine_count": int,
    "volume_count": int,
    "organization": {"name": str, "slug": str},
}
_LEASE = {
    "status": str,
    "data": {"nonce": str, "expires_at": int, "owner": str, "description": str, "version": str},
}
_ERROR = {"error": str, "status": str}

#: fly-go's MachinePresets (machine_types.go) without the GPU ones, which Fly refuses since
#: 2026-08: name → the guest flyctl sends for it.
_PRESETS = {
    **{f"shared-cpu-{n}x": ("shared", n, 256 * n) for n in (1, 2, 4, 6, 8)},
    **{f"performance-{n}x": ("performance", n, 2048 * n) for n in (1, 2, 4, 6, 8, 10, 12, 14, 16)},
}


def go_decode(value: Any, shape: Any, where: str = "body") -> None:
    """Fail as Go's json.Unmarshal into ``shape`` would: a JSON type the Go field cannot
    hold. Absent fields and nulls decode to zero values, so they pass."""
    if value is None:
        return
    if shape == "time":
        assert isinstance(value, str) and _GO_TIME.fullmatch(value), (
            f"{where}: Go's time.Time cannot decode {value!r}"
        )
    elif isinstance(shape, dict):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        for key, inner in shape.items():
            go_decode(value.get(key), inner, f"{where}.{key}")
    elif isinstance(shape, list):
        assert isinstance(value, list), f"{where}: expected an array, got {value!r}"
        for i, item in enumerate(value):
            go_decode(item, shape[0], f"{where}[{i}]")
    elif shape is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r}"
    else:
        assert isinstance(value, shape), f"{where}: expected {shape.__name__}, got {value!r}"


class Flaps:
    """fly-go's flaps client, request for request (only the calls these tests make)."""

    def __init__(self, http: httpx.Client, app: str) -> None:
        self.http = http
        self.app = app

    def _send(self, method: str, endpoint: str, body: str | None = None) -> httpx.Response:
        # flaps marshals ``in`` with encoding/json and sends it as application/json; no body
        # at all when ``in`` is nil.
        headers = {"Content-Type": "application/json"} if body is not None else {}
        path = f"/v1/apps/{self.app}/machines{endpoint}"
        return self.http.request(method, path, content=body, headers=headers)

    def launch(self, config: str, *, skip_launch: bool = False) -> httpx.Response:
        skip = '"skip_launch":true,' if skip_launch else ""
        return self._send("POST", "", f'{{"config":{config},{skip}"skip_secrets":false}}')

    def get(self, machine_id: str) -> httpx.Response:
        return self._send("GET", f"/{machine_id}")

    def list(self) -> httpx.Response:
        return self._send("GET", "")

    def stop(self, machine_id: str) -> httpx.Response:
        # StopMachineInput{ID, Signal omitempty, Timeout Duration}: a struct is never omitted.
        return self._send("POST", f"/{machine_id}/stop", f'{{"id":"{machine_id}","timeout":"0s"}}')

    def wait(self, machine_id: str, state: str) -> httpx.Response:
        # go-querystring sorts keys; the timeout defaults to 60 s.
        return self._send("GET", f"/{machine_id}/wait?state={state}&timeout=60")

    def destroy(self, machine_id: str, nonce: str = "") -> httpx.Response:
        headers = {"fly-machine-lease-nonce": nonce} if nonce else {}
        path = f"/v1/apps/{self.app}/machines/{machine_id}?kill=true"
        return self.http.delete(path, headers=headers)

    def find_lease(self, machine_id: str) -> httpx.Response:
        return self._send("GET", f"/{machine_id}/lease")

    def acquire_lease(self, machine_id: str) -> httpx.Response:
        return self._send("POST", f"/{machine_id}/lease?ttl=30")

    def release_lease(self, machine_id: str, nonce: str) -> httpx.Response:
        return self.http.delete(
            f"/v1/apps/{self.app}/machines/{machine_id}/lease",
            headers={"fly-machine-lease-nonce": nonce},
        )

    def set_metadata(self, machine_id: str, key: str, value: str) -> httpx.Response:
        body = json.dumps({"value": value}, separators=(",", ":"))
        return self._send("POST", f"/{machine_id}/metadata/{key}", body)

    def get_metadata(self, machine_id: str) -> httpx.Response:
        return self._send("GET", f"/{machine_id}/metadata")

    def delete_metadata(self, machine_id: str, key: str) -> httpx.Response:
        return self._send("DELETE", f"/{machine_id}/metadata/{key}")


#: A MachineConfig as flyctl marshals it: ``init`` is a struct without omitempty, so ``{}``.
_STAND_IN = '{"init":{},"image":"registry.fly.io/flaps-test:latest","restart":{"policy":"no"}}'


@pytest.fixture
def flaps(emulator: RunningEmulator) -> Iterator[Flaps]:
    """A flaps client of a fresh app, created as ``fly apps create`` does."""
    name = f"flaps-{uuid.uuid4().hex[:10]}"
    with sync_client(emulator) as http:
        body = f'{{"name":"{name}","org_slug":"personal","network":"","app_role_id":""}}'
        created = http.post(
            "/v1/apps?wait=true", content=body, headers={"Content-Type": "application/json"}
        )
        assert created.status_code == 201, created.text
        yield Flaps(http, name)
        http.delete(f"/v1/apps/{name}", params={"force": "true"})


def _launched(flaps: Flaps, config: str = _STAND_IN) -> dict[str, Any]:
    answer = flaps.launch(config)
    assert answer.status_code == 200, answer.text
    go_decode(answer.json(), _MACHINE)
    return dict(answer.json())


def _error(answer: httpx.Response, status: int, text: str) -> None:
    assert answer.status_code == status, answer.text
    go_decode(answer.json(), _ERROR)
    assert text in answer.json()["error"]


def test_apps_create_answers_the_app_flyctl_reads(emulator: RunningEmulator) -> None:
    # Item 4: flaps.CreateApp decodes an App; `fly apps create` prints its name.
    name = f"flaps-{uuid.uuid4().hex[:10]}"
    body = f'{{"name":"{name}","org_slug":"personal","network":"","app_role_id":""}}'
    with sync_client(emulator) as http:
        answer = http.post(
            "/v1/apps?wait=true", content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 201, answer.text
        app = answer.json()
        go_decode(app, _APP)
        assert app["name"] == name
        assert app["organization"]["slug"] == "personal"
        assert app["status"] and app["id"]
        http.delete(f"/v1/apps/{name}")


def test_exit_events_decode_once_a_machine_has_exited(flaps: Flaps) -> None:
    # Item 1: MachineExitEvent.ExitedAt is a time.Time: `fly machine list` and `status` of a
    # stopped machine decode it.
    machine = _launched(flaps)
    assert flaps.wait(machine["id"], "started").status_code == 200
    assert flaps.stop(machine["id"]).status_code == 200
    assert flaps.wait(machine["id"], "stopped").status_code == 200
    shown = flaps.get(machine["id"]).json()
    go_decode(shown, _MACHINE)
    assert any(e["type"] == "exit" for e in shown["events"])
    go_decode(flaps.list().json(), [_MACHINE])


def test_a_stop_saying_0s_gives_the_default_grace(flaps: Flaps) -> None:
    # Item 6: flaps always sends "timeout":"0s" (Duration is a struct): it means "the default
    # grace", not "kill at once": the stop signal, then SIGKILL only after the grace.
    machine = _launched(flaps)
    assert flaps.wait(machine["id"], "started").status_code == 200
    assert flaps.stop(machine["id"]).status_code == 200
    assert flaps.wait(machine["id"], "stopped").status_code == 200
    exits = [e for e in flaps.get(machine["id"]).json()["events"] if e["type"] == "exit"]
    assert exits[0]["request"]["exit_event"]["signal"] != 9, exits[0]


def test_no_lease_is_lease_not_found(flaps: Flaps) -> None:
    # Item 2: flyctl tells "no lease" by the text `lease not found` (leases view/clear, and
    # releasing its lease after a destroy).
    machine = _launched(flaps)
    _error(flaps.find_lease(machine["id"]), 404, "lease not found")
    lease = flaps.acquire_lease(machine["id"])
    assert lease.status_code == 201, lease.text
    go_decode(lease.json(), _LEASE)
    nonce = lease.json()["data"]["nonce"]
    assert flaps.destroy(machine["id"], nonce).status_code == 200
    _error(flaps.release_lease(machine["id"], nonce), 404, "lease not found")


def test_metadata_writes_need_no_lease_nonce(flaps: Flaps) -> None:
    # Item 3: SetMetadata/DeleteMetadata send no nonce; blue-green deploys call them while
    # holding the lease.
    machine = _launched(flaps)
    lease = flaps.acquire_lease(machine["id"])
    assert lease.status_code == 201, lease.text
    assert flaps.set_metadata(machine["id"], "fly_flyctl_version", "0.4.111").is_success
    metadata = flaps.get_metadata(machine["id"]).json()
    go_decode(metadata, {"fly_flyctl_version": str})
    assert metadata["fly_flyctl_version"] == "0.4.111"
    assert flaps.delete_metadata(machine["id"], "fly_flyctl_version").is_success
    assert "fly_flyctl_version" not in flaps.get_metadata(machine["id"]).json()
    flaps.destroy(machine["id"], lease.json()["data"]["nonce"])


@pytest.mark.parametrize("preset", sorted(_PRESETS))
def test_every_preset_fly_go_ships_is_accepted(flaps: Flaps, preset: str) -> None:
    # Item 5: flyctl turns --vm-size into the preset's guest; `size` names it directly.
    kind, cpus, memory_mb = _PRESETS[preset]
    guest = f'{{"cpu_kind":"{kind}","cpus":{cpus},"memory_mb":{memory_mb}}}'
    for config in (
        f'{{"init":{{}},"guest":{guest},"image":"registry.fly.io/flaps-test:latest"}}',
        f'{{"init":{{}},"image":"registry.fly.io/flaps-test:latest","size":"{preset}"}}',
    ):
        answer = flaps.launch(config, skip_launch=True)
        assert answer.status_code == 200, answer.text
        assert flaps.destroy(answer.json()["id"]).status_code == 200


def test_a_failed_launch_fails_a_wait_for_started_at_once(flaps: Flaps) -> None:
    # Item 6: Fly answers a wait for started on a machine that failed to launch at once,
    # "machine failed to reach desired state", instead of 408 until the timeout.
    config = '{"init":{"exec":["/nonexistent/program"]},"image":"registry.fly.io/flaps-test:1"}'
    machine = _launched(flaps, config)
    assert flaps.wait(machine["id"], "failed").status_code == 200
    _error(flaps.wait(machine["id"], "started"), 400, "machine failed to reach desired state")
    flaps.destroy(machine["id"])


def test_every_answer_carries_a_fly_request_id(flaps: Flaps) -> None:
    # Item 6: fly-go reads `fly-request-id` into FlapsError (for a support request).
    machine = _launched(flaps)
    for answer in (flaps.get(machine["id"]), flaps.find_lease(machine["id"])):
        assert answer.headers.get("fly-request-id"), answer.headers
    flaps.destroy(machine["id"])


def test_a_destroyed_machine_is_machine_not_found(flaps: Flaps) -> None:
    # Item 6: flyctl matches `machine not found` on a 404 for a machine that is gone.
    machine = _launched(flaps)
    assert flaps.destroy(machine["id"]).status_code == 200
    _error(flaps.stop(machine["id"]), 404, "machine not found")
    _error(flaps.get("0" * 14), 404, "machine not found")
