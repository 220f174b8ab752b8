"""What a machine runs and sees: files under its root (and ``guest_path`` checks), the
environment (base, ``env``, secrets, Fly's variables), processes and image commands."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable

import httpx
import pytest
from _emu_helpers import create, exit_event, get, new_app, sync_client, wait_ok

from flyjobs._wire.machine import MACHINE_ROOT_ENV
from flyjobs.emulator import RunningEmulator

DUMP_ENV = [
    "python",
    "-c",
    "import json, os, sys; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), "
    "'exe': sys.executable}))",
]


def _output(client: httpx.Client, app: str, machine_id: str) -> list[str]:
    r = client.get(f"/api/v1/apps/{app}/logs", params={"instance": machine_id})
    return [entry["attributes"]["message"] for entry in r.json()["data"]]


def _run_and_dump(client: httpx.Client, app: str, **config: object) -> dict[str, object]:
    machine = create(client, app, DUMP_ENV, restart={"policy": "no"}, **config)
    wait_ok(client, app, machine["id"], "stopped")
    dump: dict[str, object] = json.loads(_output(client, app, machine["id"])[-1])
    dump["machine"] = get(client, app, machine["id"])
    return dump


def test_environment(client: httpx.Client, app: str) -> None:
    client.post(f"/v1/apps/{app}/secrets", json={"values": {"DB_URL": "postgres://x"}})
    dump = _run_and_dump(
        client,
        app,
        env={"APP_ENV": "production"},
        guest={"cpu_kind": "shared", "cpus": 1, "memory_mb": 512},
    )
    env: dict[str, str] = dump["env"]  # type: ignore[assignment]
    machine: dict[str, str] = dump["machine"]  # type: ignore[assignment]
    assert env["APP_ENV"] == "production"
    assert env["DB_URL"] == "postgres://x"
    assert env["PATH"] == os.environ["PATH"]
    assert env["FLY_APP_NAME"] == app
    assert env["FLY_MACHINE_ID"] == env["FLY_ALLOC_ID"] == machine["id"]
    assert env["FLY_REGION"] == env["PRIMARY_REGION"] == "lcl"
    assert env["FLY_IMAGE_REF"] == "flyjobs-test"
    assert env["FLY_MACHINE_VERSION"] == machine["version"]
    assert env["FLY_PRIVATE_IP"] == machine["private_ip"]
    assert env["FLY_PROCESS_GROUP"] == "app"
    assert env["FLY_VM_MEMORY_MB"] == "512"
    assert env[MACHINE_ROOT_ENV].endswith("/root")
    # Its own root, never the emulator's folder (a Fly machine has no way into the caller's).
    assert dump["cwd"] == env[MACHINE_ROOT_ENV]
    assert dump["exe"] == sys.executable


def test_files_are_written_under_the_root(client: httpx.Client, app: str) -> None:
    client.post(
        f"/v1/apps/{app}/secrets", json={"values": {"CERT": base64.b64encode(b"secret!").decode()}}
    )
    read = (
        "import os, pathlib; root = pathlib.Path(os.environ['" + MACHINE_ROOT_ENV + "']); "
        "hello = root / 'path/to/hello.txt'; "
        "print(hello.read_text().strip(), (root / 'path/to/secret.txt').read_text(), "
        "oct(hello.stat().st_mode & 0o777))"
    )
    files = [
        {"guest_path": "/path/to/hello.txt", "raw_value": "aGVsbG8gd29ybGQK", "mode": 0o600},
        {"guest_path": "/path/to/secret.txt", "secret_name": "CERT"},
    ]
    machine = create(client, app, ["python", "-c", read], files=files, restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    assert exit_event(get(client, app, machine["id"]))["exit_code"] == 0
    assert _output(client, app, machine["id"]) == ["hello world secret! 0o600"]


@pytest.mark.parametrize(
    "guest_path",
    ["relative/path", "/../escape", "/a/../../escape", "/", "", "/a/..", None],
)
def test_guest_path_must_stay_inside_the_root(
    client: httpx.Client, app: str, guest_path: str | None
) -> None:
    config = {"image": "x", "files": [{"guest_path": guest_path, "raw_value": "eA=="}]}
    r = client.post(f"/v1/apps/{app}/machines", json={"config": config})
    assert r.status_code == 400
    assert "guest_path" in r.json()["error"]
    assert client.get(f"/v1/apps/{app}/machines", params={"include_deleted": "true"}).json() == []


@pytest.mark.parametrize(
    "file",
    [
        {"guest_path": "/a"},
        {"guest_path": "/a", "raw_value": "eA==", "secret_name": "S"},
        {"guest_path": "/a", "raw_value": "not base64!"},
        {"guest_path": "/a", "secret_name": "MISSING"},
    ],
)
def test_bad_file_sources_are_400(client: httpx.Client, app: str, file: dict[str, str]) -> None:
    r = client.post(f"/v1/apps/{app}/machines", json={"config": {"image": "x", "files": [file]}})
    assert r.status_code == 400


def test_entrypoint_and_cmd(client: httpx.Client, app: str) -> None:
    init = {"entrypoint": ["python", "-c"], "cmd": ["print('from cmd')"]}
    machine = create(client, app, init=init, restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    assert _output(client, app, machine["id"]) == ["from cmd"]


def test_processes_run_together_and_stop_with_the_first(client: httpx.Client, app: str) -> None:
    processes = [
        {"name": "web", "cmd": ["python", "-c", "import time; time.sleep(600)"]},
        {
            "name": "job",
            "cmd": [
                "python",
                "-c",
                "import os; print('job', os.environ['ROLE']); raise SystemExit(4)",
            ],
            "env": {"ROLE": "worker"},
        },
    ]
    machine = create(client, app, processes=processes, restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    assert exit_event(get(client, app, machine["id"]))["exit_code"] == 4
    assert _output(client, app, machine["id"]) == ["job worker"]


def test_image_commands_and_the_stand_in(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(image_commands={"acme/job": ["python", "-c", "print('mapped')"]})
    with sync_client(emu) as c:
        app = new_app(c)
        mapped = create(c, app, image="acme/job:v2", restart={"policy": "no"})
        wait_ok(c, app, mapped["id"], "stopped")
        assert _output(c, app, mapped["id"]) == ["mapped"]
        service = create(c, app, image="nginx")
        wait_ok(c, app, service["id"], "started")
        assert (
            c.get(
                f"/v1/apps/{app}/machines/{service['id']}/wait",
                params={"state": "stopped", "timeout": 1},
            ).status_code
            == 408
        )
        c.post(f"/v1/apps/{app}/machines/{service['id']}/stop")
        wait_ok(c, app, service["id"], "stopped")
        assert exit_event(get(c, app, service["id"]))["exit_code"] == 0


def test_host_credentials_never_reach_a_machine(
    client: httpx.Client, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host_only = {
        "FLY_API_TOKEN": "fly-token",
        "FLY_ACCESS_TOKEN": "fly-access",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "MY_SERVICE_SECRET": "mine",
        "PYTHONANYWHERE_TOKEN": "pa",
    }
    for name, value in host_only.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    dump = _run_and_dump(client, app)
    env: dict[str, str] = dump["env"]  # type: ignore[assignment]
    assert not set(host_only) & set(env)
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"] == os.environ["PATH"]
    # Only what a program or Python needs, Fly's variables, and the machine root.
    assert {n for n in env if not n.startswith(("FLY_", "LC_", "PYTHON"))} <= {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
        "LD_LIBRARY_PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "SSL_CERT_FILE", "SSL_CERT_DIR",
        "PRIMARY_REGION", MACHINE_ROOT_ENV,
    }  # fmt: skip


def test_pass_env_lets_chosen_host_variables_through(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SERVICE_SECRET", "mine")
    emu = make_emulator(pass_env=["MY_SERVICE_SECRET"])
    with sync_client(emu) as client:
        dump = _run_and_dump(client, new_app(client))
    env: dict[str, str] = dump["env"]  # type: ignore[assignment]
    assert env["MY_SERVICE_SECRET"] == "mine"


def test_secrets_and_env_cannot_displace_what_the_platform_sets(
    client: httpx.Client, app: str
) -> None:
    # PATH is the image's (here the host's) unless the config or a secret sets it, as on Fly.
    client.post(f"/v1/apps/{app}/secrets", json={"values": {"PATH": os.environ["PATH"]}})
    for name in (MACHINE_ROOT_ENV, "FLY_MACHINE_ID", "FLY_APP_NAME"):
        r = client.post(f"/v1/apps/{app}/secrets", json={"values": {name: "forged"}})
        assert r.status_code == 400, name
        r = client.post(
            f"/v1/apps/{app}/machines", json={"config": {"image": "x", "env": {name: "forged"}}}
        )
        assert r.status_code == 400, name
    dump = _run_and_dump(client, app, env={"PRIMARY_REGION": "ams"})
    env: dict[str, str] = dump["env"]  # type: ignore[assignment]
    assert env[MACHINE_ROOT_ENV].endswith("/root")
    assert env["PRIMARY_REGION"] == "ams"
