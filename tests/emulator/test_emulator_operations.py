"""Exec, app secrets, metadata, events, versions, list filters and app deletion."""

from __future__ import annotations

import httpx
import pytest
from _emu_helpers import SLEEP, create, get, wait_ok


def test_exec_runs_in_the_machine_environment(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP, env={"GREETING": "hi"})
    wait_ok(client, app, machine["id"], "started")
    base = f"/v1/apps/{app}/machines/{machine['id']}/exec"
    script = (
        "import os, sys; print(os.environ['GREETING'], os.environ['FLY_MACHINE_ID']); "
        "print('oops', file=sys.stderr); raise SystemExit(3)"
    )
    r = client.post(base, json={"command": ["python", "-c", script]})
    assert r.status_code == 200
    assert r.json() == {"exit_code": 3, "stdout": f"hi {machine['id']}\n", "stderr": "oops\n"}
    r = client.post(
        base,
        json={"cmd": "python -c 'import sys; print(sys.stdin.read().upper())'", "stdin": "abc"},
    )
    assert r.json()["stdout"] == "ABC\n"
    r = client.post(
        base, json={"command": ["python", "-c", "import time; time.sleep(5)"], "timeout": 1}
    )
    assert r.status_code == 408
    assert client.post(base, json={}).status_code == 400


def test_exec_needs_a_started_machine(client: httpx.Client, app: str) -> None:
    r = client.post(
        f"/v1/apps/{app}/machines", json={"config": {"image": "x"}, "skip_launch": True}
    )
    base = f"/v1/apps/{app}/machines/{r.json()['id']}/exec"
    assert client.post(base, json={"command": ["true"]}).status_code == 409


def test_secrets_set_list_get_delete(client: httpx.Client, app: str) -> None:
    base = f"/v1/apps/{app}/secrets"
    r = client.post(base, json={"values": {"A": "1", "B": "2"}})
    assert r.status_code == 200
    assert {s["name"] for s in r.json()["secrets"]} == {"A", "B"}
    assert "value" not in client.get(base).json()["secrets"][0]
    assert client.get(base, params={"show_secrets": "true"}).json()["secrets"][0]["value"] == "1"
    r = client.post(f"{base}/C", json={"value": "3"})
    assert r.status_code == 201
    assert r.json()["name"] == "C"
    assert client.get(f"{base}/C", params={"show_secrets": "true"}).json()["value"] == "3"
    assert client.delete(f"{base}/C").status_code == 200
    assert client.get(f"{base}/C").status_code == 404
    assert client.delete(f"{base}/C").status_code == 404
    client.post(base, json={"values": {"A": None}})
    assert [s["name"] for s in client.get(base).json()["secrets"]] == ["B"]


def test_machines_see_secrets_as_of_create_or_update(client: httpx.Client, app: str) -> None:
    client.post(f"/v1/apps/{app}/secrets", json={"values": {"TOKEN": "old"}})
    show = ["python", "-c", "import os, time; print(os.environ.get('TOKEN')); time.sleep(600)"]
    machine = create(client, app, show)
    wait_ok(client, app, machine["id"], "started")
    client.post(f"/v1/apps/{app}/secrets", json={"values": {"TOKEN": "new"}})
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    read = {"command": ["python", "-c", "import os; print(os.environ['TOKEN'])"]}
    assert client.post(f"{base}/exec", json=read).json()["stdout"] == "old\n"
    client.post(base, json={"config": {"image": "x", "init": {"exec": show}}})
    wait_ok(client, app, machine["id"], "started")
    assert client.post(f"{base}/exec", json=read).json()["stdout"] == "new\n"


def test_metadata(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP, metadata={"call_id": "c1"})
    base = f"/v1/apps/{app}/machines/{machine['id']}/metadata"
    assert client.get(base).json() == {"call_id": "c1"}
    assert client.post(f"{base}/batch", json={"value": "b1"}).status_code == 204
    assert client.get(f"{base}/batch").json() == {"value": "b1"}
    assert client.delete(f"{base}/batch").status_code == 204
    assert client.get(f"{base}/batch").status_code == 404
    r = client.patch(
        base, json={"metadata": {"a": "1", "call_id": None}, "machine_version": machine["version"]}
    )
    assert r.status_code == 204
    assert client.get(base).json() == {"a": "1"}
    r = client.patch(
        base, json={"metadata": {"b": "2"}, "machine_version": "01STALESTALESTALESTALESTAL"}
    )
    assert r.status_code == 412
    assert client.put(base, json={"metadata": {"b": "2"}}).status_code == 204
    after = get(client, app, machine["id"])
    assert after["config"]["metadata"] == {"a": "1", "b": "2"}
    assert after["version"] == machine["version"]  # metadata makes no new version
    listed = client.get(
        f"/v1/apps/{app}/machines", params={"metadata.a": "1", "metadata.b": "2"}
    ).json()
    assert [m["id"] for m in listed] == [machine["id"]]
    assert client.get(f"/v1/apps/{app}/machines", params={"metadata.a": "2"}).json() == []


def test_events_and_versions(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    wait_ok(client, app, machine["id"], "started")
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    client.post(base, json={"config": {"image": "two", "init": {"exec": SLEEP}}})
    wait_ok(client, app, machine["id"], "started")
    events = client.get(f"{base}/events").json()
    assert [e["type"] for e in events] == ["start", "exit", "update", "start", "launch"]
    assert all({"id", "type", "status", "source", "timestamp"} <= e.keys() for e in events)
    assert events == sorted(events, key=lambda e: e["timestamp"], reverse=True)
    assert len(client.get(f"{base}/events", params={"limit": 2}).json()) == 2
    versions = client.get(f"{base}/versions").json()
    assert [v["user_config"]["image"] for v in versions] == ["two", "flyjobs-test"]
    old = client.get(base, params={"version": machine["version"]}).json()
    assert old["config"]["image"] == "flyjobs-test"


def test_list_filters_and_pages(client: httpx.Client, app: str) -> None:
    running = create(client, app, SLEEP)
    created = client.post(
        f"/v1/apps/{app}/machines",
        json={"config": {"image": "x"}, "skip_launch": True, "region": "ams"},
    ).json()
    wait_ok(client, app, running["id"], "started")
    base = f"/v1/apps/{app}/machines"
    assert [m["id"] for m in client.get(base, params={"state": "created"}).json()] == [
        created["id"]
    ]
    assert len(client.get(base, params={"state": "created,started"}).json()) == 2
    assert [m["id"] for m in client.get(base, params={"region": "ams"}).json()] == [created["id"]]
    summary = client.get(base, params={"summary": "true"}).json()
    assert "config" not in summary[0]
    first = client.get(base, params={"limit": 1})
    cursor = first.headers["fly-next-cursor"]
    second = client.get(base, params={"limit": 1, "cursor": cursor})
    assert [m["id"] for m in first.json() + second.json()] == [running["id"], created["id"]]
    assert "fly-next-cursor" not in second.headers


def test_duplicate_machine_name_is_409(client: httpx.Client, app: str) -> None:
    body = {"name": "call-1", "config": {"image": "x"}, "skip_launch": True}
    assert client.post(f"/v1/apps/{app}/machines", json=body).status_code == 200
    r = client.post(f"/v1/apps/{app}/machines", json=body)
    assert r.status_code == 409
    assert "call-1" in r.json()["error"]


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"image": ""},
        {"image": "x", "guest": {"memory_mb": 300}},
        {"image": "x", "guest": {"cpu_kind": "shared", "cpus": 3}},
        {"image": "x", "guest": {"cpu_kind": "quantum"}},
        {"image": "x", "guest": {"cpu_kind": "performance", "cpus": 1, "memory_mb": 256}},
        {"image": "x", "guest": {"memory_mb": 256}, "size": "shared-cpu-1x"},
        {"image": "x", "size": "shared-cpu-3x"},
        {"image": "x", "guest": {"memory_mb": 256, "kernel_args": "quiet"}},
        {"image": "x", "restart": {"policy": "sometimes"}},
        {"image": "x", "restart": {"policy": "on-failure", "max_retries": -1}},
        {"image": "x", "stop_config": {"timeout": "6m"}},
        {"image": "x", "stop_config": {"signal": "SIGSEGV"}},
        {"image": "x", "env": {"A": 1}},
        {"image": "x", "init": {"exec": "python"}},
    ],
)
def test_invalid_configs_are_400(client: httpx.Client, app: str, config: dict[str, object]) -> None:
    r = client.post(f"/v1/apps/{app}/machines", json={"config": config})
    assert r.status_code == 400, config
    assert client.get(f"/v1/apps/{app}/machines").json() == []


def test_valid_sizes_and_guests_are_recorded(client: httpx.Client, app: str) -> None:
    for config in (
        {"size": "performance-2x"},
        {
            "guest": {
                "cpu_kind": "performance",
                "cpus": 2,
                "memory_mb": 4096,
                "kernel_args": ["quiet"],
            }
        },
        {"guest": {"cpu_kind": "shared", "cpus": 8, "memory_mb": 16384}},
    ):
        body = {"config": {"image": "x", **config}, "skip_launch": True}
        r = client.post(f"/v1/apps/{app}/machines", json=body)
        assert r.status_code == 200, config
        assert {k: r.json()["config"][k] for k in config} == config
