"""fn.map / fn.starmap: one machine per input, results in order, failures and early exits
cancel the rest."""

from __future__ import annotations

import contextlib
import signal
import warnings
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import remote_funcs as funcs
from _remote_helpers import machines, metadata

import flyjobs
from flyjobs._calls.runtime import Runtime

pytestmark = pytest.mark.usefixtures("no_machine_left")


def test_map_yields_values_in_input_order(runtime: Runtime) -> None:
    assert list(funcs.add.map(range(6), range(6))) == [0, 2, 4, 6, 8, 10]


def test_map_as_completed_yields_every_value(runtime: Runtime) -> None:
    values = list(funcs.slow.map([0.6, 0.0, 0.3], order_outputs=False))
    assert sorted(values) == [0.0, 0.3, 0.6]
    assert values[0] == 0.0  # the quickest call comes first


def test_starmap_spreads_tuples_over_parameters(runtime: Runtime) -> None:
    assert list(funcs.add.starmap([(1, 2), (3, 4)])) == [3, 7]


def test_without_reuse_call_ids_are_deterministic_and_name_the_machines(
    runtime: Runtime,
) -> None:
    before = {m.id for m in machines(runtime)}
    assert list(funcs.add.map([1, 2, 3], reuse=False)) == [1, 2, 3]
    new = [m for m in machines(runtime) if m.id not in before]
    batch_ids = {metadata(m)["flyjobs_batch_id"] for m in new}
    assert len(batch_ids) == 1
    (batch_id,) = batch_ids
    assert sorted(m.name or "" for m in new) == [f"{batch_id}-{i}" for i in range(3)]
    assert all(metadata(m)["flyjobs_call_id"] == m.name for m in new)


def test_return_exceptions_yields_failures_in_place(runtime: Runtime) -> None:
    results = list(funcs.fail.map(["a", "b"], return_exceptions=True))
    assert [type(r) for r in results] == [funcs.LocalOnlyError, funcs.LocalOnlyError]
    assert [str(r) for r in results] == ["a", "b"]


@pytest.mark.usefixtures("no_machine_left")
def test_a_failure_raises_and_cancels_the_rest(runtime: Runtime, tmp_path: Path) -> None:
    with pytest.raises(flyjobs.MachineCrashedError):
        for _ in funcs.crash_or_mark_after.map([3, 30, 30], [str(tmp_path)] * 3):
            pass
    # The sleepers were cancelled (their machines destroyed), not waited for: neither ran to
    # its end, where it leaves its mark.
    assert not list(tmp_path.iterdir())


def test_an_input_that_cannot_be_encoded_is_that_inputs_error(runtime: Runtime) -> None:
    mixed = list(funcs.echo.map([1, object(), 3], return_exceptions=True))
    assert mixed[0] == 1 and mixed[2] == 3
    assert isinstance(mixed[1], flyjobs.SerializationError)
    assert "input 1" in str(mixed[1])
    values = funcs.echo.map([1, 2, object()])
    assert [next(values), next(values)] == [1, 2]
    with pytest.raises(flyjobs.SerializationError, match="input 2"):
        next(values)


def test_leaving_the_loop_early_cancels_the_rest(runtime: Runtime) -> None:
    for value in funcs.slow.map([0.0, 30, 30]):
        assert value == 0.0
        break  # the results are dropped, which closes them
    # no_machine_left checks that the two sleepers were destroyed.
    values = funcs.slow.map([0.0, 30, 30])
    assert next(values) == 0.0
    values.close()


@pytest.mark.anyio
async def test_async_map(runtime: Runtime) -> None:
    values = [v async for v in funcs.add.map.aio([1, 2, 3], [10, 20, 30])]
    assert values == [11, 22, 33]
    unordered = [v async for v in funcs.slow.map.aio([0.6, 0.0], order_outputs=False)]
    assert unordered == [0.0, 0.6]


def test_bad_map_arguments_are_refused_before_any_machine(runtime: Runtime) -> None:
    before = len(machines(runtime))
    bad: list[tuple[dict[str, object], str]] = [
        ({"max_machine": 3}, "unknown setting.*max_machine.*max_machines"),
        ({"timeout_s": 5}, "unknown setting.*timeout_s.*with_options"),
        ({"max_machines": "3"}, "max_machines='3': give a whole number"),
        ({"max_machines": 1.5}, "max_machines=1.5: give a whole number"),
        ({"max_machines": True}, "max_machines=True: give a whole number"),
        ({"max_machines": 0}, "max_machines=0: must be at least 1"),
        ({"max_failures": "1", "return_exceptions": True}, "max_failures='1'"),
        ({"reuse": "no"}, "reuse='no': give True or False"),
        ({"progress": "yes"}, "progress='yes'"),
        ({"standby": "yes"}, "standby='yes': give True, False, or None"),
    ]
    for settings, message in bad:
        with pytest.raises(flyjobs.ConfigError, match=message):
            funcs.echo.map([1], **settings)  # type: ignore[call-overload]
    with pytest.raises(flyjobs.ConfigError, match="at least one iterable.*starmap"):
        funcs.echo.map()  # type: ignore[call-overload]  # type checkers refuse it too
    with pytest.raises(flyjobs.ConfigError, match="unknown setting"):
        funcs.add.starmap([(1, 2)], retries=2)  # type: ignore[call-overload]
    assert len(machines(runtime)) == before


@pytest.mark.anyio
async def test_a_map_leaves_the_sigterm_handler_as_it_found_it(runtime: Runtime) -> None:
    # While a map runs in the main thread, SIGTERM raises SystemExit so that the map destroys
    # its machines; after it, a SIGTERM must do what it did before.
    before = signal.getsignal(signal.SIGTERM)
    assert [v async for v in funcs.echo.map.aio([1, 2])] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) is before
    async with contextlib.aclosing(funcs.slow.map.aio([0.0, 30])) as values:
        async for _ in values:
            break
    assert signal.getsignal(signal.SIGTERM) is before
    # Closing waited for the batch's machines (the sleeper's included) to be destroyed.
    assert [m.id for m in machines(runtime) if m.state != "destroyed"] == []
    assert await anyio.to_thread.run_sync(lambda: list(funcs.echo.map([3]))) == [3]
    with warnings.catch_warnings():  # blocking the loop on purpose: a map in the main thread
        warnings.simplefilter("ignore", RuntimeWarning)
        assert list(funcs.echo.map([4])) == [4]
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_async_map_left_unclosed_when_its_loop_ends_restores_the_sigterm_handler(
    runtime: Runtime,
) -> None:
    # `break` without aclosing: asyncio.run closes the generator as it ends, and cancels that.
    before = signal.getsignal(signal.SIGTERM)

    async def leave_early() -> None:
        async for _ in funcs.slow.map.aio([0.0, 30]):
            break

    anyio.run(leave_early)
    assert signal.getsignal(signal.SIGTERM) is before
