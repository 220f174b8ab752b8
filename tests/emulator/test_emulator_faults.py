"""Fly's rate limits (429 + Retry-After), added latency and boot delay, injected 5xx answers
and dropped connections (some after the change was made)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import pytest
from _emu_helpers import SLEEP, create, get, new_app, sync_client, wait, wait_ok
from _waiting import eventually

from flyjobs.emulator import RunningEmulator


class HandClock:
    """Monotonic time that moves only when the test says so (the rate limits read it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_per_action_rate_limit(make_emulator: Callable[..., RunningEmulator]) -> None:
    clock = HandClock()
    with sync_client(make_emulator(rate_limits=True, clock=clock)) as c:
        app = new_app(c)
        machine = create(c, app, SLEEP)
        base = f"/v1/apps/{app}/machines/{machine['id']}"
        codes = [c.get(f"{base}/metadata").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get(f"{base}/metadata")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]
        # Another action, and the same action on another subject, have their own budgets.
        assert c.get(f"{base}/events").status_code == 200
        clock.now += 0.9  # not yet a whole token back
        assert c.get(f"{base}/metadata").status_code == 429
        clock.now += 0.1
        assert c.get(f"{base}/metadata").status_code == 200
        assert c.get(f"{base}/metadata").status_code == 429


def test_get_machine_has_a_larger_budget(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator(rate_limits=True, clock=HandClock())) as c:
        app = new_app(c)
        machine = create(c, app, SLEEP)
        codes = [c.get(f"/v1/apps/{app}/machines/{machine['id']}").status_code for _ in range(11)]
        assert codes == [200] * 10 + [429]


def test_latency_is_added(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator(latency_s=0.2)) as c:
        started = time.monotonic()
        c.get("/v1/apps", params={"org_slug": "personal"})
        assert time.monotonic() - started >= 0.2


def test_boot_delay(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator(boot_delay_s=0.5)) as c:
        app = new_app(c)
        started = time.monotonic()
        machine = create(c, app, SLEEP)
        r = c.get(f"/v1/apps/{app}/machines/{machine['id']}/wait", params={"state": "started"})
        assert r.status_code == 200
        assert time.monotonic() - started >= 0.5


def test_error_rate_answers_5xx_and_changes_nothing(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    with sync_client(make_emulator(error_rate=0.5, seed=1)) as c:
        refused: list[str] = []
        for index in range(30):
            name = f"err-{index}"
            r = c.post("/v1/apps", json={"name": name, "org_slug": "personal"})
            if r.status_code >= 500:
                assert r.status_code in (500, 502, 503)
                assert r.json()["error"]
                refused.append(name)
            else:
                assert r.status_code == 201, r.text
        assert 0 < len(refused) < 30
        assert [_status_through_errors(c, f"/v1/apps/{name}") for name in refused] == [404] * len(
            refused
        )


def _status_through_errors(c: httpx.Client, url: str) -> int:
    for _ in range(50):
        status = c.get(url).status_code
        if status < 500:
            return status
    raise AssertionError(f"every GET {url} was answered 5xx")


def test_error_rate_is_a_fraction(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator(error_rate=0.3, seed=7)) as c:
        codes = [c.get("/v1/apps", params={"org_slug": "personal"}).status_code for _ in range(200)]
    failures = sum(code >= 500 for code in codes)
    assert 30 <= failures <= 90


def test_dropped_connection(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(drop_rate=1.0, seed=3)
    with sync_client(emu) as c, pytest.raises(httpx.TransportError):
        c.get("/v1/apps", params={"org_slug": "personal"})


def test_some_drops_happen_after_the_change(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator(drop_rate=0.5, seed=11)) as c:
        dropped: list[str] = []
        for index in range(40):
            name = f"drop-{index}"
            try:
                c.post("/v1/apps", json={"name": name, "org_slug": "personal"})
            except httpx.TransportError:
                dropped.append(name)
        assert dropped, "no connection was dropped"
        made_anyway = [name for name in dropped if _get_through_drops(c, f"/v1/apps/{name}") == 200]
    assert 0 < len(made_anyway) < len(dropped)


def _get_through_drops(c: httpx.Client, url: str) -> int:
    for _ in range(50):
        try:
            return c.get(url).status_code
        except httpx.TransportError:
            continue
    raise AssertionError(f"every GET {url} was dropped")


def _suspend_then_start(c: httpx.Client) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A new machine, started, suspended, then asked to start again (it resumes):
    ``(app, machine, the process it ran before its suspend)``."""
    app = new_app(c)
    machine = create(c, app, SLEEP)
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    wait_ok(c, app, machine["id"], "started")
    (process,) = c.get(f"{base}/ps").json()
    assert c.post(f"{base}/suspend").status_code == 200
    wait_ok(c, app, machine["id"], "suspended")
    assert c.post(f"{base}/start").json()["previous_state"] == "suspended"
    return app, machine, process


def test_resume_delay_keeps_the_process_frozen_while_starting(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    # A long delay: the machine is seen "starting" with its process still frozen, then the
    # same process continues.
    with sync_client(make_emulator(resume_delay_s=30.0)) as c:
        app, machine, process = _suspend_then_start(c)
        base = f"/v1/apps/{app}/machines/{machine['id']}"
        assert get(c, app, machine["id"])["state"] == "starting"
        # SIGSTOP takes effect when the process is next scheduled (later on a loaded box): wait
        # for it. A resume that let the process go on would never show it stopped.
        frozen = psutil.Process(process["pid"])
        eventually(lambda: frozen.status() == psutil.STATUS_STOPPED, "the process frozen")
        assert get(c, app, machine["id"])["state"] == "starting"
        # A stop during the resume discards the frozen process.
        assert c.post(f"{base}/stop").status_code == 200
        wait_ok(c, app, machine["id"], "stopped")


def test_a_cold_resume_starts_a_new_run(make_emulator: Callable[..., RunningEmulator]) -> None:
    with sync_client(make_emulator(cold_resume_share=1.0, resume_delay_s=0.0)) as c:
        app, machine, frozen = _suspend_then_start(c)
        base = f"/v1/apps/{app}/machines/{machine['id']}"
        wait_ok(c, app, machine["id"], "started")
        (fresh,) = c.get(f"{base}/ps").json()
        assert fresh["pid"] != frozen["pid"]
        assert not psutil.pid_exists(frozen["pid"]) or (
            psutil.Process(frozen["pid"]).status() == psutil.STATUS_ZOMBIE
        )
        assert get(c, app, machine["id"])["state"] == "started"


@pytest.mark.parametrize("action", ["start", "stop", "suspend", "update"])
def test_start_update_suspend_stop_are_limited_per_machine(
    make_emulator: Callable[..., RunningEmulator], action: str
) -> None:
    """Fly limits these actions per machine (1/s, burst 3), not per app: a fourth request on
    one machine in the same instant is refused 429, while another machine still has its
    whole burst, so many standbys can all be started at once."""
    clock = HandClock()
    with sync_client(make_emulator(rate_limits=True, clock=clock)) as c:
        app = new_app(c)
        first, second = (create(c, app, SLEEP, skip_launch=True) for _ in range(2))

        def send(machine_id: str) -> int:
            path = f"/v1/apps/{app}/machines/{machine_id}"
            if action == "update":
                body = {"config": {"image": "flyjobs-test", "init": {"exec": SLEEP}}}
                return c.post(path, json={**body, "skip_launch": True}).status_code
            return c.post(f"{path}/{action}").status_code

        codes = [send(first["id"]) for _ in range(4)]
        assert 429 not in codes[:3] and codes[3] == 429
        assert [send(second["id"]) for _ in range(3)].count(429) == 0
        clock.now += 1.0  # one token back, for that machine's action
        assert send(first["id"]) != 429
        assert send(first["id"]) == 429


def test_a_start_of_a_stopped_machine_boots_for_the_boot_delay(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    """A start of a stopped machine is a boot, as its first launch was: ``starting`` for
    ``boot_delay_s`` before its process runs (here longer than the test, so it stays so)."""
    with sync_client(make_emulator(boot_delay_s=600)) as c:
        app = new_app(c)
        machine = create(c, app, SLEEP, skip_launch=True)
        path = f"/v1/apps/{app}/machines/{machine['id']}"
        assert c.post(f"{path}/start").status_code == 200
        assert c.post(f"{path}/stop").status_code == 200  # still booting: it never runs
        assert c.get(path).json()["state"] == "stopped"
        assert c.post(f"{path}/start").json()["previous_state"] == "stopped"
        assert wait(c, app, machine["id"], "started", timeout=1).status_code == 408
        assert c.get(path).json()["state"] == "starting"
