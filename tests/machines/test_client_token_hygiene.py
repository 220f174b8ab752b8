"""The API token never shows up in a repr, an exception (or its cause chain) or a log record."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from _mc_helpers import client_for, quick_config, sleeper_config

from flyjobs._exceptions import FlyjobsError
from flyjobs.emulator import RunningEmulator
from flyjobs.machines import MachineConfig, MachinesClient, RetryPolicy

pytestmark = pytest.mark.anyio

TOKEN = "fly-tok-SENTINEL-7f3a9c1e5b"
FEW_RETRIES = RetryPolicy(max_attempts=2, base_s=0.01, max_s=0.02)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _texts_of(exc: BaseException) -> Iterator[str]:
    yield "".join(traceback.format_exception(exc))
    for link in _chain(exc):
        yield str(link)
        yield repr(link)
        request = getattr(link, "_request", None)  # httpx keeps the request it failed on
        if request is not None:
            yield repr(request)
            yield repr(request.headers)


async def _collect(errors: list[BaseException], action: Callable[[], Awaitable[Any]]) -> None:
    try:
        await action()
    except (FlyjobsError, ValueError) as exc:
        errors.append(exc)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _exercise(fly: MachinesClient, errors: list[BaseException]) -> None:
    """Succeeding and failing calls of every kind against a working emulator."""
    app = "hygiene"
    await fly.create_app(app)
    await _collect(errors, lambda: fly.create_app(app))  # 422
    await _collect(errors, lambda: fly.get_app("no-such-app"))  # 404
    machine = await fly.create_machine(app, sleeper_config())
    await fly.wait(app, machine.id, timeout_s=30)
    await _collect(errors, lambda: fly.wait(app, machine.id, "stopped", timeout_s=1))
    await _collect(errors, lambda: fly.delete_machine(app, machine.id))  # 409
    async with fly.lease(app, machine.id, ttl_s=5):
        await _collect(errors, lambda: fly.acquire_lease(app, machine.id))  # lease held
        await fly.set_metadata_value(app, machine.id, "k", "v")
    await _collect(errors, lambda: fly.exec(app, machine.id, "ls"))  # local ValueError
    await _collect(errors, lambda: fly.stop_machine(app, machine.id, timeout_s=900))
    await fly.set_secret(app, "S", "value")
    await fly.log_tail(app, machine.id)
    quick = await fly.create_machine(app, quick_config())
    await fly.wait(app, quick.id, "destroyed", timeout_s=30)
    for live in await fly.list_machines(app):
        await fly.delete_machine(app, live.id, force=True)


async def test_token_appears_nowhere(
    make_emulator: Callable[..., RunningEmulator], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    texts: list[str] = []

    good = make_emulator(tokens=[TOKEN])
    async with client_for(good, retry=FEW_RETRIES) as fly:
        texts.append(repr(fly))
        texts.append(repr(vars(fly)))
        await _exercise(fly, errors)

    failing = {
        "refused": f"http://127.0.0.1:{_closed_port()}",
        "dropped": make_emulator(tokens=[TOKEN], drop_rate=1.0).url,
        "5xx": make_emulator(tokens=[TOKEN], error_rate=1.0).url,
        "401": make_emulator(tokens=["another-token"]).url,
    }
    for url in failing.values():
        async with MachinesClient(TOKEN, base_url=url, retry=FEW_RETRIES) as fly:
            await _collect(errors, lambda: fly.get_app("x"))
            await _collect(errors, lambda: fly.create_machine("x", MachineConfig(image="i")))
            await _collect(errors, lambda: fly.wait("x", "m", timeout_s=1))

    kinds = {type(link).__name__ for exc in errors for link in _chain(exc)}
    # The failures exercised include the httpx exceptions that carry the request.
    assert {"ConnectError", "RemoteProtocolError", "ServerError", "AuthenticationError"} <= kinds
    assert {"UnprocessableError", "NotFoundError", "LeaseHeldError", "WaitTimeoutError"} <= kinds
    for exc in errors:
        texts.extend(_texts_of(exc))
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            texts.extend(_texts_of(record.exc_info[1]))
    assert any("flyjobs.machines" == r.name for r in caplog.records)
    leaks = [text for text in texts if TOKEN in text]
    assert leaks == []
