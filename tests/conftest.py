"""Shared fixtures: the local emulator as a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from flyjobs.emulator import EmulatorConfig, RunningEmulator, serve_in_thread

TEST_TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def emulator() -> Iterator[RunningEmulator]:
    """One emulator for the session, default settings, faults off."""
    with serve_in_thread(EmulatorConfig(tokens=[TEST_TOKEN])) as emu:
        yield emu


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., RunningEmulator]]:
    """Factory for an emulator with its own settings; each is stopped when the test ends."""
    with ExitStack() as stack:

        def make(**settings: Any) -> RunningEmulator:
            settings.setdefault("tokens", [TEST_TOKEN])
            return stack.enter_context(serve_in_thread(EmulatorConfig(**settings)))

        yield make
