"""Batches at scale: machines that take more than one input, lazy inputs, retries, failure
policy, progress and clean-up on every exit path, over the embedded emulator."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import remote_funcs as funcs
from _remote_helpers import machines
from _waiting import eventually

import flyjobs
import flyjobs._batches.work
from flyjobs._calls.runtime import Runtime

pytestmark = pytest.mark.usefixtures("no_machine_left")


def _live(runtime: Runtime) -> list[str]:
    return [f"{m.name}:{m.state}" for m in machines(runtime) if m.state != "destroyed"]


def _new_machines(runtime: Runtime, before: set[str]) -> list[object]:
    return [m for m in machines(runtime) if m.id not in before]


def test_machines_take_more_than_one_input(runtime: Runtime) -> None:
    before = {m.id for m in machines(runtime)}
    values = list(funcs.add.map(range(40), range(40), max_machines=3))
    assert values == [2 * i for i in range(40)]
    new = _new_machines(runtime, before)
    assert 1 <= len(new) <= 3
    assert all(m.config.auto_destroy for m in new)  # type: ignore[attr-defined]


def test_reuse_off_keeps_one_machine_per_input(runtime: Runtime) -> None:
    before = {m.id for m in machines(runtime)}
    assert list(funcs.add.map(range(5), reuse=False, max_machines=2)) == list(range(5))
    assert len(_new_machines(runtime, before)) == 5


def test_a_generator_of_a_million_items_broken_after_five_results(runtime: Runtime) -> None:
    read = 0

    def inputs() -> Iterator[int]:
        nonlocal read
        for i in range(10**6):
            read += 1
            yield i

    taken = []
    for value in funcs.echo.map(inputs(), max_machines=4):
        taken.append(value)
        if len(taken) == 5:
            break
    assert taken == [0, 1, 2, 3, 4]
    time.sleep(0.2)
    stopped_at = read
    assert stopped_at < 2000, "the input was read far beyond the look-ahead window"
    time.sleep(0.5)
    assert read == stopped_at, "reading went on after the loop was left"


def test_inputs_read_before_a_blocking_one_run_and_closing_does_not_wait_for_it(
    runtime: Runtime,
) -> None:
    # A generator that pauses (a queue, a socket, a slow query) after two inputs: those two
    # run meanwhile, and leaving the map does not wait for the third.
    release = threading.Event()
    safety = threading.Timer(20, release.set)  # the generator never blocks a broken run forever
    safety.start()

    def inputs() -> Iterator[int]:
        yield 1
        yield 2
        release.wait()
        yield 3

    try:
        values = funcs.echo.map(inputs())
        assert [next(values), next(values)] == [1, 2]
        values.close()
        assert not release.is_set(), "the first results waited for the blocked generator"
    finally:
        release.set()
        safety.cancel()


@pytest.mark.slow
def test_results_waiting_for_the_caller_stop_new_inputs_at_a_byte_budget(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Input 0 runs until released, so the results of those after it wait for the caller (in
    # input order). Past the budget no machine is handed another input: the second machine
    # runs out of work and ends. Without the budget it would take all ten first.
    monkeypatch.setattr(flyjobs._batches.work, "MAX_HELD_BYTES", 3 * 2**20)
    release = tmp_path / "release"
    before = {m.id for m in machines(runtime)}
    values = funcs.megabyte_after.map([str(release)] * 10, range(10), max_machines=2)
    while not any(m.state == "destroyed" for m in machines(runtime) if m.id not in before):
        time.sleep(0.05)
    done_while_waiting = values.summary().done
    release.touch()
    assert [len(v) for v in values] == [2**20] * 10
    assert done_while_waiting <= 4  # the budget's 3, and one handed out as it was reached


def test_a_reused_machine_that_crashes_mid_input_has_it_completed_elsewhere(
    runtime: Runtime, tmp_path: Path
) -> None:
    marker = str(tmp_path / "crashed")
    fn = funcs.pid_unless_marked.with_options(retries=1)
    results = fn.map([marker] * 8, range(8), [3] * 8, max_machines=1)
    pairs = list(results)
    assert [x for x, _ in pairs] == list(range(8))  # each input's result exactly once
    pids = [pid for _, pid in pairs]
    assert pids[0] != pids[3], "input 3 should have completed on a new machine"
    # Inputs handed in the same round trip as input 3 (a chunk) ran again with it.
    assert results.summary().retried >= 1


def test_retry_on_retries_the_functions_own_exception_with_backoff(
    runtime: Runtime, tmp_path: Path
) -> None:
    fn = funcs.flaky.with_options(retries=2, retry_on=(ValueError,))
    results = fn.map([str(tmp_path)] * 4, range(4))
    assert list(results) == [0, 1, 2, 3]
    assert results.summary().retried == 4
    # Without retry_on, the function's exception is the input's error, after one attempt.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (error,) = funcs.flaky.map([str(fresh)], [0], return_exceptions=True)
    assert isinstance(error, ValueError)


def test_outcomes_record_attempts_call_ids_and_timings_of_each_input(
    runtime: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "1").touch()  # input 1 returns at its first attempt; 0 and 2 are retried once
    fn = funcs.flaky.with_options(retries=1, retry_on=(ValueError,))
    results = fn.map([str(tmp_path)] * 3, range(3), max_machines=1)
    outcomes = list(results.outcomes())
    assert [(o.index, o.ok, o.value, o.attempts) for o in outcomes] == [
        (0, True, 0, 2),
        (1, True, 1, 1),
        (2, True, 2, 2),
    ]
    batch_id = str(outcomes[1].call_id).rsplit("-", 1)[0]
    expected_ids = [f"{batch_id}-0-r1", f"{batch_id}-1", f"{batch_id}-2-r1"]
    assert [o.call_id for o in outcomes] == expected_ids
    reused = fn.map([str(tmp_path)] * 3, range(3), max_machines=1)
    first, *later = reused.outcomes()  # every input returns at once now, on one machine
    assert {"create", "boot"} <= set(first.timings)
    assert all("create" not in o.timings and o.attempts == 1 for o in later)
    for outcome in outcomes:
        assert {"queued", "run", "deliver"} <= set(outcome.timings), outcome
        assert all(seconds >= 0 for seconds in outcome.timings.values())
        # Only an attempt that made its machine has that machine's create and boot.
        assert ("create" in outcome.timings) == ("boot" in outcome.timings), outcome
    # A failed input's outcome carries its error, never raised, with its attempts.
    (failed,) = (
        funcs.fail.with_options(retries=1, retry_on=(funcs.LocalOnlyError,))
        .map(["always"])
        .outcomes()
    )
    assert not failed.ok and isinstance(failed.value, funcs.LocalOnlyError)
    assert failed.attempts == 2 and failed.call_id is not None and failed.call_id.endswith("-r1")


def test_retry_on_records_attempts_on_the_final_error(runtime: Runtime) -> None:
    fn = funcs.fail.with_options(retries=1, retry_on=(funcs.LocalOnlyError,))
    (error,) = fn.map(["always"], return_exceptions=True)
    assert isinstance(error, funcs.LocalOnlyError)
    assert "failed after 2 attempts" in "\n".join(getattr(error, "__notes__", []))


def test_max_failures_stops_the_map_and_leaves_no_machine(runtime: Runtime) -> None:
    inputs = [-1, 30, -2, 30, 30, 30]
    results = funcs.fail_or_sleep.map(inputs, return_exceptions=True, max_failures=2)
    with pytest.raises(flyjobs.TooManyFailuresError) as caught:
        list(results)
    assert sorted(index for index, _ in caught.value.failures) == [0, 2]
    assert all(isinstance(e, ValueError) for _, e in caught.value.failures)
    assert _live(runtime) == []  # at once: map destroyed them before raising


def test_max_failures_needs_return_exceptions(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.ConfigError, match="return_exceptions"):
        funcs.echo.map([1], max_failures=1)


def test_keyboard_interrupt_while_still_submitting_destroys_every_machine(
    runtime: Runtime,
) -> None:
    def slow_inputs() -> Iterator[float]:
        for _ in range(1000):  # still being read when the interrupt comes
            time.sleep(0.05)
            yield 30.0

    def interrupt_when_running() -> None:
        try:
            eventually(lambda: len(_live(runtime)) >= 3, "three machines running")
        finally:  # interrupt anyway, so that a stuck map still ends
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        for _ in funcs.slow.map(slow_inputs()):
            pass
    assert _live(runtime) == []


def test_progress_without_a_terminal_prints_plain_lines_ending_in_the_count(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    results = funcs.echo.map(range(7), progress=True)
    assert list(results) == list(range(7))
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "7/7" in last and "done 7" in last and "failed 0" in last
    summary = results.summary()
    assert (summary.total, summary.done, summary.failed) == (7, 7, 0)
    assert summary.phases["run"].count == 7
    assert summary.phases["create"].count == summary.machines >= 1
    assert "7/7 inputs" in str(summary)


def test_progress_is_off_by_default_without_a_terminal(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert list(funcs.echo.map(range(3))) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_with_options_changes_only_the_new_function(runtime: Runtime) -> None:
    fn = funcs.env_value.with_options(env={"FLYJOBS_TEST_VALUE": "from options"})
    assert fn.remote("FLYJOBS_TEST_VALUE") == "from options"
    assert list(fn.map(["FLYJOBS_TEST_VALUE"])) == ["from options"]
    assert funcs.env_value.remote("FLYJOBS_TEST_VALUE") is None
    with pytest.raises(flyjobs.ConfigError, match="memory_mb"):
        funcs.echo.with_options(memory_mb=100)
    with pytest.raises(flyjobs.ConfigError, match="unknown option"):
        funcs.echo.with_options(colour="blue")  # type: ignore[call-arg]


def test_with_options_refuses_values_of_the_wrong_type_or_out_of_range() -> None:
    bad: list[tuple[dict[str, object], str]] = [
        ({"timeout_s": "5"}, "timeout_s='5': must be a positive number"),
        ({"timeout_s": float("inf")}, "timeout_s=inf"),
        ({"timeout_s": float("nan")}, "timeout_s=nan"),
        ({"timeout_s": True}, "timeout_s=True"),
        ({"retries": "2"}, "retries='2': give a whole number"),
        ({"retries": 1.5}, "retries=1.5: give a whole number"),
        ({"memory_mb": "512"}, "memory_mb='512': give a whole number"),
        ({"cpus": True}, "cpus=True: give a whole number"),
    ]
    for options, message in bad:
        with pytest.raises(flyjobs.ConfigError, match=message):
            funcs.echo.with_options(**options)  # type: ignore[arg-type]
    assert funcs.echo.with_options(timeout_s=0.5, retries=2).options.timeout_s == 0.5


def test_a_call_timeout_names_its_call_and_machine(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.CallTimeoutError) as caught:
        funcs.sleepy.remote(30)
    assert caught.value.call_id is not None
    assert caught.value.machine_id is not None


def test_fail_fast_cancellation_reports_no_false_problems(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flyjobs"):
        with pytest.raises(flyjobs.MachineCrashedError):
            list(funcs.crash_or_sleep.map([3, *[30] * 10]))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
