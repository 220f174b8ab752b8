"""Fixtures of the Machines client tests: clients of the emulator, apps cleaned up after use."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from _mc_helpers import client_for, destroy_all

from flyjobs.emulator import RunningEmulator
from flyjobs.machines import MachinesClient


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fly(emulator: RunningEmulator) -> AsyncIterator[MachinesClient]:
    """A client of the session emulator."""
    async with client_for(emulator) as client:
        yield client


@pytest.fixture
async def app(fly: MachinesClient) -> AsyncIterator[str]:
    """A fresh app on the session emulator; its machines are destroyed afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    await fly.create_app(name)
    yield name
    await destroy_all(fly, name)
