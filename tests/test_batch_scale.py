"""A batch far longer than its calls' timeout: each input's clocks start when a machine takes
it, not when it was read."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator

import pytest
import remote_funcs as funcs
from _remote_helpers import machines

from flyjobs._calls.runtime import Runtime, get_runtime, shutdown_runtime


@pytest.fixture
def two_machines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """A runtime on its embedded emulator with FLYJOBS_MAX_MACHINES=2."""
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)
    monkeypatch.delenv("FLYJOBS_IMAGE", raising=False)
    monkeypatch.setenv("FLYJOBS_MAX_MACHINES", "2")
    shutdown_runtime()
    yield get_runtime()
    shutdown_runtime()


@pytest.mark.slow
def test_3000_inputs_at_two_machines_with_a_two_second_timeout_all_arrive(
    two_machines: Runtime,
) -> None:
    n = 3000
    assert list(funcs.quick.map(range(n))) == list(range(n))  # timeout_s=2
    made = machines(two_machines)
    assert len(made) <= 8, "the batch's machines should each have taken many inputs"


def test_restarting_the_runtime_registers_its_exit_hook_once(
    two_machines: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[object] = []
    register = atexit.register

    def record(fn: Callable[..., object], /, *args: object, **kwargs: object) -> object:
        registered.append(fn)
        return register(fn, *args, **kwargs)

    monkeypatch.setattr(atexit, "register", record)
    for _ in range(2):
        shutdown_runtime()
        get_runtime()
    assert shutdown_runtime not in registered  # registered at the first start, never again
