"""Hostile or careless input to the emulator: refused at the request with a clear 400, or, when
it can only fail once the machine launches, ended as a ``failed`` run, never stuck."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _emu_helpers import SLEEP, create, exit_event, get, new_app, states_seen, sync_client, wait_ok

import flyjobs
from flyjobs._wire.machine import MACHINE_ROOT_ENV
from flyjobs.emulator import RunningEmulator
from flyjobs.machines import MachineConfig

_LONG_NAME = "/" + "n" * 300


def _machines(client: httpx.Client, app: str) -> list[Any]:
    r = client.get(f"/v1/apps/{app}/machines", params={"include_deleted": "true"})
    return list(r.json())


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"env": {"A=B": "x"}}, "config.env"),
        ({"env": {"": "x"}}, "config.env"),
        ({"env": {"X": "a\x00b"}}, "NUL"),
        ({"env": {MACHINE_ROOT_ENV: "/tmp"}}, MACHINE_ROOT_ENV),
        ({"env": {"FLY_REGION": "xyz"}}, "FLY_REGION"),
        ({"init": {"exec": ["python", "-c", "print(1)\x00"]}}, "config.init.exec[2]"),
        ({"init": {"cmd": ["a\x00"]}}, "config.init.cmd[0]"),
        ({"processes": [{"exec": ["x"], "env": {"Y": "\x00"}}]}, "processes[0].env"),
        ({"processes": [{"exec": ["x"], "secrets": [{"env_var": "A=B"}]}]}, "secrets"),
        ({"metadata": {"fly_process_group": "a\x00"}}, "metadata"),
        ({"image": "img\x00"}, "config.image"),
        (
            {
                "files": [
                    {"guest_path": "/f", "raw_value": "eA=="},
                    {"guest_path": "/f/g", "raw_value": "eA=="},
                ]
            },
            "both a file and a folder",
        ),
        (
            {
                "files": [
                    {"guest_path": "/d/g", "raw_value": "eA=="},
                    {"guest_path": "/d", "raw_value": "eA=="},
                ]
            },
            "both a file and a folder",
        ),
        ({"files": [{"guest_path": _LONG_NAME, "raw_value": "eA=="}]}, "at most 255"),
        ({"files": [{"guest_path": "/a\x00b", "raw_value": "eA=="}]}, "guest_path"),
    ],
)
def test_configs_no_process_could_run_are_400(
    client: httpx.Client, app: str, config: dict[str, Any], named: str
) -> None:
    r = client.post(f"/v1/apps/{app}/machines", json={"config": {"image": "x", **config}})
    assert r.status_code == 400, r.text
    assert named in r.json()["error"]
    assert _machines(client, app) == []


@pytest.mark.parametrize("region", ["ia\x00d", "", "IAD!", 7, "x" * 40])
def test_bad_regions_are_400(client: httpx.Client, app: str, region: object) -> None:
    body = {"config": {"image": "x"}, "region": region}
    r = client.post(f"/v1/apps/{app}/machines", json=body)
    if region == "":  # empty means "the default", as on Fly
        assert r.status_code == 200
        return
    assert r.status_code == 400, r.text
    assert "region" in r.json()["error"]


@pytest.mark.parametrize(
    "values",
    [{"BAD": "a\x00b"}, {"A=B": "x"}, {"": "x"}, {MACHINE_ROOT_ENV: "/"}, {"FLY_MACHINE_ID": "x"}],
)
def test_bad_secrets_are_400_and_later_machines_still_run(
    client: httpx.Client, app: str, values: dict[str, str]
) -> None:
    r = client.post(f"/v1/apps/{app}/secrets", json={"values": values})
    assert r.status_code == 400, r.text
    [(name, value)] = values.items()
    if name:
        one = client.post(f"/v1/apps/{app}/secrets/{name}", json={"value": value})
        assert one.status_code in (400, 404), one.text  # 404: "A=B" is no route-able name
    assert client.get(f"/v1/apps/{app}/secrets").json()["secrets"] == []
    machine = create(client, app, ["python", "-c", "pass"], restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    assert exit_event(get(client, app, machine["id"]))["exit_code"] == 0


@pytest.mark.parametrize(
    "body",
    [{"command": ["echo", "a\x00"]}, {"cmd": "echo a\x00"}, {"cmd": "echo 'unclosed"}],
)
def test_bad_exec_commands_are_400(client: httpx.Client, app: str, body: dict[str, Any]) -> None:
    machine = create(client, app, SLEEP)
    wait_ok(client, app, machine["id"], "started")
    r = client.post(f"/v1/apps/{app}/machines/{machine['id']}/exec", json=body)
    assert r.status_code == 400, r.text


def test_unknown_program_fails_the_machine(client: httpx.Client, app: str) -> None:
    machine = create(client, app, ["/nonexistent/program"])
    wait_ok(client, app, machine["id"], "failed")
    seen = get(client, app, machine["id"])
    assert seen["state"] == "failed"
    assert exit_event(seen)["exit_code"] == 127
    assert ("start", "started") not in states_seen(seen)  # failed runs are not restarted
    logs = client.get(f"/api/v1/apps/{app}/logs", params={"instance": machine["id"]}).json()
    assert "/nonexistent/program" in logs["data"][-1]["attributes"]["message"]
    # A failed machine can be started again, and destroyed without force.
    assert client.post(f"/v1/apps/{app}/machines/{machine['id']}/start").status_code == 200
    wait_ok(client, app, machine["id"], "failed")
    assert client.delete(f"/v1/apps/{app}/machines/{machine['id']}").status_code == 200


def test_unknown_program_with_auto_destroy_is_destroyed(client: httpx.Client, app: str) -> None:
    machine = create(client, app, ["/nonexistent/program"], auto_destroy=True)
    wait_ok(client, app, machine["id"], "destroyed")
    assert [s for _, s in states_seen(get(client, app, machine["id"]))][-2:] == [
        "failed",
        "destroyed",
    ]


def test_machine_that_sabotages_its_folder_fails_its_next_run(
    client: httpx.Client, app: str
) -> None:
    # The machine moves its own folder away and leaves a plain file in its place: its next
    # run cannot be prepared, and must end as failed instead of staying in "starting".
    sabotage = (
        "import os, sys\n"
        "folder = os.path.dirname(os.environ['" + MACHINE_ROOT_ENV + "'])\n"
        "os.rename(folder, folder + '.moved')\n"
        "open(folder, 'w').close()\n"
        "sys.exit(3)\n"
    )
    machine = create(
        client, app, ["python", "-c", sabotage], restart={"policy": "on-failure", "max_retries": 1}
    )
    wait_ok(client, app, machine["id"], "failed")
    assert exit_event(get(client, app, machine["id"]))["exit_code"] == 127


def test_root_swapped_for_a_symlink_is_reset_not_followed(
    client: httpx.Client, app: str, tmp_path: Path
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    ran = tmp_path / "ran"
    swap = (
        "import os, shutil, sys\n"
        "root = os.environ['" + MACHINE_ROOT_ENV + "']\n"
        f"if os.path.exists({str(ran)!r}):\n"
        "    sys.exit(2 if os.path.islink(root) else 0)\n"
        f"open({str(ran)!r}, 'w').close()\n"
        "shutil.rmtree(root)\n"
        f"os.symlink({str(precious)!r}, root)\n"
        "sys.exit(1)\n"
    )
    machine = create(
        client, app, ["python", "-c", swap], restart={"policy": "on-failure", "max_retries": 1}
    )
    wait_ok(client, app, machine["id"], "stopped")
    seen = get(client, app, machine["id"])
    assert exit_event(seen)["exit_code"] == 0  # the second run had a real root again
    assert states_seen(seen).count(("start", "started")) == 2
    assert (precious / "keep.txt").read_text() == "mine"


def test_files_are_freed_at_destroy(client: httpx.Client, app: str) -> None:
    show_root = ["python", "-c", f"import os; print(os.environ['{MACHINE_ROOT_ENV}'])"]
    files = [{"guest_path": "/big", "raw_value": base64.b64encode(b"x" * 4096).decode()}]
    machine = create(client, app, show_root, files=files, restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    logs = client.get(f"/api/v1/apps/{app}/logs", params={"instance": machine["id"]}).json()
    root = Path(logs["data"][-1]["attributes"]["message"])
    assert (root / "big").exists()
    assert client.delete(f"/v1/apps/{app}/machines/{machine['id']}").status_code == 200
    assert get(client, app, machine["id"])["state"] == "destroyed"  # still readable...
    assert not os.path.lexists(root)  # ...but its files are gone


def test_remote_env_with_nul_is_a_config_error_before_any_machine() -> None:
    with pytest.raises(flyjobs.ConfigError, match="NUL"):
        flyjobs.remote(env={"X": "a\x00b"})
    with pytest.raises(flyjobs.ConfigError, match=MACHINE_ROOT_ENV):
        flyjobs.remote(env={MACHINE_ROOT_ENV: "/"})
    with pytest.raises(flyjobs.ConfigError, match="region"):
        flyjobs.remote(region="ia\x00d")
    with pytest.raises(ValueError, match="NUL"):
        MachineConfig(image="x", env={"X": "a\x00b"})
    with pytest.raises(ValueError, match="valid environment variable name"):
        MachineConfig(image="x", env={"A=B": "x"})


def test_oversized_bodies_are_413_before_they_are_read(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    emu = make_emulator(max_body_bytes=64 * 1024)
    host, port = emu.url.removeprefix("http://").rsplit(":", 1)
    with sync_client(emu) as client:
        app = new_app(client)
        head = (
            f"POST /v1/apps/{app}/machines HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {emu.token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 104857600\r\n\r\n"
        ).encode()
        with socket.create_connection((host, int(port))) as upload:
            upload.settimeout(60)  # a guard against hanging, not a measurement
            upload.sendall(head + b'{"config": {"image": "x", "env": {"A": "' + b"a" * 1000)
            # The 100 MB upload is still "in progress"; other clients are answered meanwhile,
            # and the uploader is refused without sending the rest.
            assert client.get(f"/v1/apps/{app}").status_code == 200
            answer = _read_answer(upload)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"max_body_bytes" in answer

        def chunks() -> Iterator[bytes]:
            yield b'{"config": {"image": "x", "env": {"A": "'
            for _ in range(100):
                yield b"a" * 4096

        chunked = client.post(f"/v1/apps/{app}/machines", content=chunks())
        assert chunked.status_code == 413
        assert client.get(f"/v1/apps/{app}/machines").json() == []
        assert client.post(f"/v1/apps/{app}/machines", json={"config": {"image": "x"}}).is_success


def _read_answer(connection: socket.socket) -> bytes:
    """What the server sent until it closed the connection (headers and body come apart)."""
    answer = b""
    while True:
        try:
            chunk = connection.recv(4096)
        except ConnectionResetError:  # closed with the rest of our upload unread
            return answer
        if not chunk:
            return answer
        answer += chunk
