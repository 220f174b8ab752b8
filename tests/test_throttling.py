"""Throttling is never an error: 429s from the Machines API are waited out within each call's
own deadline, without pacing on the client's side, and never spend ``retries=``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import remote_funcs as funcs
from _fly_helpers import fly_env

from flyjobs._runtime import get_runtime
from flyjobs.emulator import RunningEmulator


@pytest.fixture
def throttling_api(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningEmulator]:
    """A standalone emulator answering with Fly's limits (429 + Retry-After), reached as Fly
    would be, with client pacing off: every request the limits refuse comes back 429."""
    emulator = make_emulator(rate_limits=True)
    monkeypatch.setenv("FLYJOBS_RATE_LIMITS", "off")
    for _ in fly_env(emulator, monkeypatch):
        yield emulator


@pytest.mark.slow  # several seconds: run in the slow suite
def test_throttled_creates_never_fail_a_call(throttling_api: RunningEmulator) -> None:
    # One machine per input: 8 creates against 1/s with bursts of 3, no client pacing, no
    # retries. Every create beyond the burst is refused at least once.
    fn = funcs.add.with_options(retries=0)
    assert list(fn.map(range(8), reuse=False)) == list(range(8))
    runtime = get_runtime()
    assert runtime.client.rate_limits is None  # FLYJOBS_RATE_LIMITS=off
    assert runtime.client.throttled_at is not None, "the API should have throttled"


def test_a_burst_of_single_calls_is_throttled_not_failed(throttling_api: RunningEmulator) -> None:
    calls = [funcs.add.spawn(i, 1) for i in range(6)]
    assert [call.result(timeout_s=60) for call in calls] == [i + 1 for i in range(6)]
    assert get_runtime().client.throttled_at is not None
