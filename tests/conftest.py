"""Shared fixtures: the local emulator as a real HTTP server on 127.0.0.1, and the flyjobs
runtime on its embedded emulator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from _remote_helpers import machines
from _waiting import eventually

from flyjobs._calls.runtime import Runtime, get_runtime, shutdown_runtime
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
    """Factory for an emulator with its own settings (and optionally the clock its rate limits
    read); each is stopped when the test ends."""
    with ExitStack() as stack:

        def make(clock: Callable[[], float] = time.monotonic, **settings: Any) -> RunningEmulator:
            settings.setdefault("tokens", [TEST_TOKEN])
            return stack.enter_context(serve_in_thread(EmulatorConfig(**settings), clock=clock))

        yield make


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    """The process's flyjobs runtime on its embedded emulator (no Fly token)."""
    with pytest.MonkeyPatch.context() as mp:
        # Any Fly-only setting would make flyjobs run on "Fly" instead.
        for name in ("FLY_API_TOKEN", "FLY_API_HOSTNAME", "FLY_APP", "FLYJOBS_IMAGE",
                     "FLYJOBS_RESULT_KEY", "FLY_MACHINE_ID"):  # fmt: skip
            mp.delenv(name, raising=False)
        shutdown_runtime()
        yield get_runtime()
        shutdown_runtime()


@pytest.fixture
def no_machine_left(runtime: Runtime) -> Iterator[None]:
    """After the test, every machine of the runtime's app reaches ``destroyed``."""
    yield
    eventually(
        lambda: all(m.state == "destroyed" for m in machines(runtime)),
        "every machine destroyed after the test (machines left behind)",
    )
