"""``/wait``: states (repeated or comma-separated), timeout bounds, 408, version pins, and
many concurrent waiters on one machine."""

from __future__ import annotations

import asyncio
import resource
import threading
import time

import httpx
import pytest
from _emu_helpers import SLEEP, create, wait, wait_ok


def test_timeout_is_408_with_error_body(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    started = time.monotonic()
    # The client's own read timeout (30 s) is half Fly's longest wait: a server that ignored
    # timeout=1 fails this test with a read timeout, however loaded the machine is.
    r = client.get(
        f"/v1/apps/{app}/machines/{machine['id']}/wait",
        params={"state": "stopped", "timeout": 1},
        timeout=30,
    )
    assert r.status_code == 408
    assert "error" in r.json()
    assert time.monotonic() - started > 0.9


@pytest.mark.parametrize("timeout", [0, 61, -1, "61s", "500ms", "soon"])
def test_timeout_outside_1_to_60_is_400(client: httpx.Client, app: str, timeout: int | str) -> None:
    machine = create(client, app, SLEEP)
    assert wait(client, app, machine["id"], "started", timeout=timeout).status_code == 400


def test_timeout_as_duration(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    assert wait(client, app, machine["id"], "started", timeout="30s").status_code == 200


def test_unknown_state_is_400(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    assert wait(client, app, machine["id"], "sleeping").status_code == 400


def test_default_state_is_started(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    r = client.get(f"/v1/apps/{app}/machines/{machine['id']}/wait")
    assert r.json()["state"] == "started"


def test_several_states_repeated_or_comma_separated(client: httpx.Client, app: str) -> None:
    machine = create(client, app, ["python", "-c", "pass"], restart={"policy": "no"})
    wait_ok(client, app, machine["id"], "stopped")
    base = f"/v1/apps/{app}/machines/{machine['id']}/wait"
    r = client.get(base, params=[("state", "destroyed"), ("state", "stopped"), ("timeout", "2")])
    assert r.json()["state"] == "stopped"
    r = client.get(base, params={"state": "destroyed,stopped", "timeout": 2})
    assert r.json()["state"] == "stopped"
    assert client.get(base, params={"state": "settled"}).json()["state"] == "stopped"


def test_version_pins(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    wait_ok(client, app, machine["id"], "started")
    assert (
        wait(client, app, machine["id"], "started", version=machine["version"]).status_code == 200
    )
    assert (
        wait(
            client, app, machine["id"], "started", instance_id="01BADBADBADBADBADBADBADBAD"
        ).status_code
        == 400
    )


def test_waiting_on_a_destroyed_machine(client: httpx.Client, app: str) -> None:
    machine = create(client, app, SLEEP)
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    client.delete(base, params={"force": "true"})
    assert wait(client, app, machine["id"], "destroyed").status_code == 200
    assert wait(client, app, machine["id"], "stopped").status_code == 200  # it stopped first


def test_waiter_answered_when_the_machine_is_destroyed_first(
    client: httpx.Client, app: str
) -> None:
    r = client.post(
        f"/v1/apps/{app}/machines", json={"config": {"image": "x"}, "skip_launch": True}
    )
    machine_id = r.json()["id"]
    with httpx.Client(base_url=str(client.base_url), headers=client.headers) as other:
        client.delete(f"/v1/apps/{app}/machines/{machine_id}")
        assert wait(other, app, machine_id, "started", timeout=5).status_code == 404


@pytest.fixture
def enough_file_descriptors() -> None:
    """1000 waiters hold 2000 sockets in this process (client and server ends)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if min(wanted, hard) < 2500:
        pytest.skip("not enough file descriptors for 1000 waiters")


@pytest.mark.slow  # a few seconds
@pytest.mark.anyio
@pytest.mark.usefixtures("enough_file_descriptors")
async def test_many_concurrent_waiters(aclient: httpx.AsyncClient) -> None:
    app = f"waiters-{time.monotonic_ns()}"
    await aclient.post("/v1/apps", json={"name": app, "org_slug": "personal"})
    machine = (
        await aclient.post(
            f"/v1/apps/{app}/machines", json={"config": {"image": "x", "init": {"exec": SLEEP}}}
        )
    ).json()
    url = f"/v1/apps/{app}/machines/{machine['id']}/wait"
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=str(aclient.base_url), headers=aclient.headers, limits=limits, timeout=60
    ) as many:
        waiters = [
            asyncio.create_task(many.get(url, params={"state": "stopped", "timeout": 30}))
            for _ in range(1000)
        ]
        await asyncio.sleep(1.0)
        assert not any(w.done() for w in waiters)
        # The emulator serves from a thread of this process: no thread per waiter.
        assert threading.active_count() < 50
        await aclient.post(
            f"/v1/apps/{app}/machines/{machine['id']}/stop", json={"signal": "SIGKILL"}
        )
        async with asyncio.timeout(30):
            responses = await asyncio.gather(*waiters)
    assert [r.status_code for r in responses] == [200] * 1000
    assert {r.json()["state"] for r in responses} == {"stopped"}
