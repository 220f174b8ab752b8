"""How many machines a batch runs (`flyjobs._batches.width`), on the embedded emulator: quick
inputs stay on the few machines that finish them sooner than more could boot; inputs that
turn slow widen the batch to its bound. Machines are counted, nothing is timed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import remote_funcs as funcs

from flyjobs._calls.runtime import Runtime

MAX_MACHINES = 64
#: Machines a batch of quick inputs may have started before the first of them delivered: the
#: create burst doubles every 0.1 s, so this many take a first result later than 0.3 s.
FEW = 24


def _warm(results: Iterator[int]) -> None:
    """A first batch of the function: a batch knows nothing of its inputs before its first
    result, and widens with time meanwhile, as fast as the function's last batch booted (in
    this process; the first waits for the function's code and the emulator's fork server)."""
    assert list(results) == list(range(4))


@pytest.mark.usefixtures("no_machine_left")
def test_quick_inputs_run_on_a_few_machines_not_max_machines(runtime: Runtime) -> None:
    _warm(funcs.quick.map(range(4)))
    results = funcs.quick.map(range(600), max_machines=MAX_MACHINES)
    assert list(results) == list(range(600))
    assert results.summary().machines <= FEW


@pytest.mark.slow
@pytest.mark.usefixtures("no_machine_left")
def test_inputs_that_turn_slow_widen_the_batch_to_its_bound(runtime: Runtime) -> None:
    quick, slow, bound = 300, 30, 12
    count = quick + slow
    _warm(funcs.slow_from.map(range(4), [4] * 4, [0.0] * 4))
    results = funcs.slow_from.map(range(count), [quick] * count, [1.5] * count, max_machines=bound)
    assert list(results) == list(range(count))
    assert results.summary().machines == bound
