"""Throttling is never an error: 429s from the Machines API are waited out within each call's
own deadline, without pacing on the client's side, and never spend ``retries=``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import remote_funcs as funcs
from _fly_helpers import fly_env

from flyjobs._calls.runtime import get_runtime
from flyjobs.emulator import RunningEmulator

SUPPORT = Path(__file__).resolve().parent / "_support"


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


@pytest.mark.slow
def test_a_burst_of_single_calls_is_throttled_not_failed(throttling_api: RunningEmulator) -> None:
    calls = [funcs.add.spawn(i, 1) for i in range(6)]
    assert [call.result(timeout_s=60) for call in calls] == [i + 1 for i in range(6)]
    assert get_runtime().client.throttled_at is not None


MAPPER = """
import sys
sys.path.insert(0, {support!r})
import remote_funcs as funcs
fn = funcs.sleepy.with_options(timeout_s=5, retries=0)
# Inputs that take a while: the batch wants all its machines, and creates them all.
inputs = [0.5] * {n}
values = list(fn.map(inputs, max_machines={machines}, return_exceptions=True, progress=False))
failed = [v for v in values if isinstance(v, BaseException)]
print("ok", values.count(0.5), flush=True)
for error in failed[:3]:
    print("failed", type(error).__name__, str(error).replace("\\n", " "), flush=True)
"""


@pytest.mark.slow  # tens of seconds: creates at the API's rate
def test_two_processes_mapping_at_once_against_the_limits_lose_no_input(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two callers share the app's create limit, each pacing as on Fly: together they send
    twice what the API allows, so creates wait behind 429s, longer than an input's timeout_s.
    An input whose create waits has not been taken: none fails, with retries=0."""
    emulator = make_emulator(rate_limits=True)
    monkeypatch.setenv("FLYJOBS_RATE_LIMITS", "fly")
    for env in fly_env(emulator, monkeypatch):
        env = {**os.environ, **env, "FLYJOBS_RATE_LIMITS": "fly"}
        script = MAPPER.format(support=str(SUPPORT), n=150, machines=16)
        mappers = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            outputs = [mapper.communicate(timeout=300) for mapper in mappers]
        finally:
            for mapper in mappers:
                if mapper.poll() is None:
                    mapper.kill()
                    mapper.communicate()
        for out, err in outputs:
            assert "ok 150\n" in out, out + err[-3000:]


@pytest.mark.slow  # several seconds: creates at the API's rate
def test_auto_pacing_on_loopback_backs_off_then_paces(
    make_emulator: Callable[..., RunningEmulator],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``auto`` does not pace an API on this host, until it answers 429: then creates back
    off and are paced as on Fly, instead of each being retried at once. Fewer than 2 answers
    of 429 per machine created."""
    emulator = make_emulator(rate_limits=True)
    monkeypatch.delenv("FLYJOBS_RATE_LIMITS", raising=False)
    for _ in fly_env(emulator, monkeypatch):
        fn = funcs.add.with_options(retries=0)
        with caplog.at_level(logging.DEBUG, logger="flyjobs.machines"):
            assert list(fn.map(range(40), max_machines=10)) == list(range(40))
        runtime = get_runtime()
        assert runtime.client.rate_limits is None  # auto, on a loopback host
        creates = [
            record.getMessage().split()[2]
            for record in caplog.records
            if record.getMessage().startswith("POST ")
            and record.getMessage().split()[1].endswith("/machines")
        ]
        created, throttled = creates.count("200"), creates.count("429")
        assert created >= 4, creates
        assert throttled < 2 * created, f"{throttled} answers of 429 for {created} machines"
