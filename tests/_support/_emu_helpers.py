"""Helpers of the emulator tests (a module, not a conftest, so tests can import them)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

# tests/ is on sys.path (pytest puts the root conftest's folder there), so _spec imports.
from _spec import acheck_response, check_response

from flyjobs.emulator import RunningEmulator

#: A machine command that stays up until stopped.
SLEEP = ["python", "-c", "import time; time.sleep(600)"]
#: A machine command that ignores SIGINT/SIGTERM (so a stop needs its timeout, then SIGKILL).
STUBBORN = [
    "python",
    "-c",
    "import signal, time\n"
    "for s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)",
]


def sync_client(emu: RunningEmulator, **kwargs: Any) -> httpx.Client:
    """A client of ``emu`` that validates every response against the spec."""
    return httpx.Client(
        base_url=emu.url,
        headers={"Authorization": f"Bearer {emu.token}"},
        event_hooks={"response": [check_response]},
        timeout=70,
        **kwargs,
    )


def async_client(emu: RunningEmulator, **kwargs: Any) -> httpx.AsyncClient:
    """An async client of ``emu`` that validates every response against the spec."""
    return httpx.AsyncClient(
        base_url=emu.url,
        headers={"Authorization": f"Bearer {emu.token}"},
        event_hooks={"response": [acheck_response]},
        timeout=70,
        **kwargs,
    )


def new_app(c: httpx.Client) -> str:
    """Create an app with a fresh name and return the name."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    assert c.post("/v1/apps", json={"name": name, "org_slug": "personal"}).status_code == 201
    return name


def create(
    c: httpx.Client, app: str, argv: list[str] | None = None, **config: Any
) -> dict[str, Any]:
    """Create a machine running ``argv`` with the given config fields; assert 200."""
    config.setdefault("image", "flyjobs-test")
    if argv is not None:
        config["init"] = {"exec": argv}
    r = c.post(f"/v1/apps/{app}/machines", json={"config": config})
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait(
    c: httpx.Client, app: str, machine_id: str, state: str, timeout: int | str = 20, **params: Any
) -> httpx.Response:
    """``GET …/wait`` for ``state``."""
    return c.get(
        f"/v1/apps/{app}/machines/{machine_id}/wait",
        params={"state": state, "timeout": timeout, **params},
    )


def wait_ok(c: httpx.Client, app: str, machine_id: str, state: str, timeout: int = 20) -> None:
    """Wait for ``state`` and assert it was reached."""
    r = wait(c, app, machine_id, state, timeout)
    assert r.status_code == 200, r.text


def get(c: httpx.Client, app: str, machine_id: str) -> dict[str, Any]:
    """The machine, asserting 200."""
    r = c.get(f"/v1/apps/{app}/machines/{machine_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def exit_event(machine: dict[str, Any]) -> dict[str, Any]:
    """The newest exit event's ``exit_event``."""
    for event in machine["events"]:
        if event["type"] == "exit":
            return dict(event["request"]["exit_event"])
    raise AssertionError(f"no exit event in {machine['events']}")


def states_seen(machine: dict[str, Any]) -> list[tuple[str, str]]:
    """(type, status) of the machine's events, oldest first."""
    return [(e["type"], e["status"]) for e in reversed(machine["events"])]
