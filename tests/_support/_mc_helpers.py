"""Helpers of the Machines client tests (imported by name: tests/_support is on sys.path)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from _spec import SpecCheckingTransport, check_response

from flyjobs.emulator import RunningEmulator
from flyjobs.machines import MachineConfig, MachinesClient, RetryPolicy

#: Retries fast enough for tests, with the default budget.
FAST_RETRY = RetryPolicy(base_s=0.01, max_s=0.2)
#: A machine that exits at once (the emulator runs the command as a local process).
QUICK = ["python", "-c", "pass"]


def quick_config(**fields: Any) -> MachineConfig:
    """A config whose machine runs ``python -c pass`` and destroys itself when done."""
    fields.setdefault("init", {"cmd": QUICK})
    fields.setdefault("restart", {"policy": "no"})
    fields.setdefault("auto_destroy", True)
    return MachineConfig(image="python:3", **fields)


def sleeper_config(seconds: int = 60, **fields: Any) -> MachineConfig:
    """A config whose machine keeps running for ``seconds`` (killed by stop or delete)."""
    fields.setdefault("init", {"cmd": ["python", "-c", f"import time; time.sleep({seconds})"]})
    fields.setdefault("restart", {"policy": "no"})
    return MachineConfig(image="python:3", **fields)


def client_for(emu: RunningEmulator, **kwargs: Any) -> MachinesClient:
    """A client of ``emu`` with fast retries; every answer is checked against Fly's spec."""
    kwargs.setdefault("retry", FAST_RETRY)
    if "http" not in kwargs:
        kwargs.setdefault("transport", SpecCheckingTransport())
    return MachinesClient(emu.token, base_url=emu.url, **kwargs)


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]],
    *,
    off_spec: bool = False,
    **kwargs: Any,
) -> MachinesClient:
    """A client whose requests are answered by ``handler`` (for answers the emulator cannot
    be made to give). Each canned answer is checked against Fly's spec, unless ``off_spec``
    says the test gives one Fly's spec does not describe on purpose."""

    async def answer(request: httpx.Request) -> httpx.Response:
        answered = handler(request)
        response = await answered if inspect.isawaitable(answered) else answered
        response.request = request
        if not off_spec:
            check_response(response)
        return response

    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("token", "mock-token-123")
    return MachinesClient(
        base_url="http://127.0.0.1:9", transport=httpx.MockTransport(answer), **kwargs
    )


async def destroy_all(fly: MachinesClient, app: str) -> None:
    """Destroy every machine of ``app`` still alive, then the app."""
    for machine in await fly.list_machines(app):
        if machine.state != "destroyed":
            await fly.delete_machine(app, machine.id, force=True)
    await fly.delete_app(app, force=True)
