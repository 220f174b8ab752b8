"""Fixtures for the emulator tests: real HTTP, every response checked against Fly's spec."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from _emu_helpers import async_client, new_app, sync_client

from flyjobs.emulator import RunningEmulator


@pytest.fixture
def client(emulator: RunningEmulator) -> Iterator[httpx.Client]:
    """Sync client of the session emulator."""
    with sync_client(emulator) as c:
        yield c


@pytest.fixture
async def aclient(emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """Async client of the session emulator."""
    async with async_client(emulator) as c:
        yield c


@pytest.fixture
def app(client: httpx.Client) -> Iterator[str]:
    """A fresh app on the session emulator, deleted with its machines afterwards."""
    name = new_app(client)
    yield name
    client.delete(f"/v1/apps/{name}", params={"force": "true"})
