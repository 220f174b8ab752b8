"""Throttled creates of a batch over the object store: each sent again with its inputs' clocks
started anew (new deadlines, new presigned URLs), and nothing left behind."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import store_funcs as funcs
from _store_helpers import live_machines, objects
from _waiting import eventually

from flyjobs._calls.runtime import get_runtime
from flyjobs.emulator import RunningEmulator


@pytest.fixture
def make_emulator(
    make_emulator: Callable[..., RunningEmulator],
) -> Callable[..., RunningEmulator]:
    """The emulators of these tests answer with Fly's limits (429 + Retry-After)."""
    return functools.partial(make_emulator, rate_limits=True)


@pytest.mark.slow  # several seconds: creates wait out the API's limits
def test_throttled_creates_of_slices_restart_their_inputs_clocks(
    fly_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight machines with slices of eight inputs, no client pacing: every create past the
    # API's burst of 3 is refused at least once, and each is sent again with its slice's
    # tickets opened anew.
    monkeypatch.setenv("FLYJOBS_RATE_LIMITS", "off")
    values = list(funcs.double.with_options(retries=0).map(range(64), max_machines=8))
    assert values == [2 * x for x in range(64)]
    assert get_runtime().client.throttled_at is not None, "the API should have throttled"
    assert objects(fly_store) == []  # no result left by a ticket that was replaced
    eventually(lambda: live_machines() == [], "every machine is gone")
