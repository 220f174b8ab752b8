"""A batch's width (`flyjobs._batches.width`): whether another machine is worth starting, from
the timings it is told of, on an injected clock. The batch's use of it, on the embedded
emulator, is in `test_batch_width.py`."""

from __future__ import annotations

import pytest

from flyjobs._batches.width import BLIND_DOUBLING_S, BLIND_MACHINES, STALL_S, Gauge, Width


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _started(width: Width, count: int) -> list[Gauge]:
    gauges = []
    for _ in range(count):
        assert width.wait_s(1000) == 0
        gauges.append(width.asked())
    return gauges


def _booted(width: Width, clock: Clock) -> list[Gauge]:
    """Three machines, booted in 50 ms, whose first functions ran 10 µs, each handed more."""
    gauges = _started(width, 3)
    clock.now += 0.05
    for gauge in gauges:
        gauge.first_result(1e-5)
        gauge.handed()
    return gauges


def test_before_any_result_it_starts_the_create_burst_then_doubles_with_time(
    clock: Clock,
) -> None:
    width = Width(clock=clock)
    _started(width, BLIND_MACHINES)
    assert width.wait_s(1000) > 0
    clock.now += BLIND_DOUBLING_S  # twice as many
    _started(width, BLIND_MACHINES)
    assert width.wait_s(1000) > 0
    clock.now += 2 * BLIND_DOUBLING_S  # eight times the burst
    _started(width, 8 * BLIND_MACHINES - 2 * BLIND_MACHINES)
    assert 0 < width.wait_s(1000) <= BLIND_DOUBLING_S


def test_quick_inputs_keep_the_batch_at_the_machines_it_has(clock: Clock) -> None:
    width = Width(clock=clock)
    gauges = _booted(width, clock)
    clock.now += 0.01
    for gauge in gauges:
        gauge.round_trip(64, 0.01, 64 * 1e-5)
    # 1,000 inputs of 10 µs on 3 machines: 3 ms of work each, far less than a boot.
    assert width.wait_s(1000) > 0
    # Much later, with no new result, still quick (the caller was busy, not the machines).
    clock.now += STALL_S / 2
    assert width.wait_s(1000) > 0


def test_slow_inputs_widen_the_batch_at_once(clock: Clock) -> None:
    width = Width(clock=clock)
    gauges = _started(width, 3)
    clock.now += 1.3  # a boot of 0.3 s and a function of 1 s
    for gauge in gauges:
        gauge.first_result(1.0)
    # 57 one-second inputs on 3 machines: 19 s of work each, against a boot of 0.3 s.
    assert width.wait_s(57) == 0
    # A few left: the running machines finish them before a new one would boot.
    assert width.wait_s(0) > 0


def test_inputs_that_turn_slow_widen_it_once_a_round_trip_stalls(clock: Clock) -> None:
    width = Width(clock=clock)
    gauges = _booted(width, clock)
    clock.now += 0.01
    for gauge in gauges:
        gauge.round_trip(8, 0.01, 8e-5)
        gauge.handed()
    assert width.wait_s(500) > 0
    # The next inputs run 10 s each: no result for STALL_S, then the time past it counts.
    clock.now += STALL_S + 0.1
    assert width.wait_s(500) == 0


def test_one_stalled_machine_among_quick_ones_does_not_widen_it(clock: Clock) -> None:
    width = Width(clock=clock)
    gauges = _booted(width, clock)
    clock.now += STALL_S + 5.0
    for gauge in gauges[1:]:
        gauge.round_trip(64, 0.01, 64e-5)
        gauge.handed()
    assert width.wait_s(500) > 0  # the median machine is quick


def test_machines_that_ended_no_longer_count(clock: Clock) -> None:
    width = Width(clock=clock)
    gauges = _started(width, 3)
    clock.now += 0.5
    for gauge in gauges:
        gauge.first_result(0.2)
    # 6 inputs of 0.2 s on 3 machines: 0.4 s each, more than a boot of 0.3 s.
    assert width.wait_s(6) == 0
    assert width.wait_s(4) > 0  # 0.27 s each, less than the boot
    for gauge in gauges:
        gauge.end()
    assert width.wait_s(4) == 0  # no machine runs: the inputs need one


def test_before_any_result_it_doubles_every_boot_of_the_functions_last_batch(
    clock: Clock,
) -> None:
    width = Width(clock=clock, prior_boot_s=0.3)  # its last batch booted in 0.3 s
    _started(width, BLIND_MACHINES)
    # Two thirds of a boot later, up to 3 x 2 ** (2 / 3) = 4.8 may run: one starts while fewer
    # run, so 5 (12 without the prior, at a doubling every 0.1 s).
    clock.now += 0.2
    more = 0
    while width.wait_s(1000) == 0:
        width.asked()
        more += 1
    assert BLIND_MACHINES + more == 5
