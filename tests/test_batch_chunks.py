"""Batch machines that take several small inputs per round trip (a chunk, `flyjobs._wire.bulk`)
over the embedded emulator: a slow input does not hold fast ones back, and order, retries,
``max_failures``, outcomes and journals stay per input. Nothing is timed: each test counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import remote_funcs as funcs
from _remote_helpers import machines

import flyjobs
from flyjobs._calls.runtime import Runtime, shutdown_runtime

N = 300
#: Inputs of the tests that look at failures (x % 40 == 3 fails): 3 of them fail.
FEW = 120


@pytest.mark.usefixtures("no_machine_left")
def test_fast_inputs_are_not_held_behind_a_slow_one_on_its_machine(
    runtime: Runtime, tmp_path: Path
) -> None:
    # The slow input waits until every other input has run: any fast input held behind it on
    # its machine (in its chunk) would leave it short of marks.
    slow = N // 2
    fn = funcs.mark_or_wait
    values = list(fn.map([str(tmp_path)] * N, range(N), [slow] * N, [N] * N, max_machines=3))
    assert values[slow][0] == N - 1, "fast inputs waited behind the slow one"
    assert [x for x, _ in values[:slow]] == list(range(slow))  # in order
    assert [x for x, _ in values[slow + 1 :]] == list(range(slow + 1, N))


@pytest.mark.usefixtures("no_machine_left")
def test_retries_count_per_input_in_chunks(runtime: Runtime, tmp_path: Path) -> None:
    fn = funcs.flaky.with_options(retries=1, retry_on=(ValueError,))
    outcomes = list(fn.map([str(tmp_path)] * N, range(N), max_machines=2).outcomes())
    assert [o.value for o in outcomes] == list(range(N))
    assert {o.attempts for o in outcomes} == {2}  # each failed once, on its own
    assert len({o.call_id for o in outcomes}) == N


@pytest.mark.usefixtures("no_machine_left")
def test_an_input_that_kills_its_machine_fails_alone(runtime: Runtime) -> None:
    # No retries: the inputs of the dead machine's chunk run again uncharged (alone), so only
    # the input that kills a machine every time fails, with one attempt.
    bad = 137
    results = funcs.crash_on.map(range(N), [bad] * N, max_machines=2, return_exceptions=True)
    outcomes = list(results.outcomes())
    failed = [o for o in outcomes if not o.ok]
    assert [o.index for o in failed] == [bad]
    assert isinstance(failed[0].value, flyjobs.MachineCrashedError)
    assert failed[0].attempts == 1
    assert [o.value for o in outcomes if o.ok] == [x for x in range(N) if x != bad]
    assert {o.attempts for o in outcomes if o.ok} == {1}


@pytest.mark.slow
@pytest.mark.usefixtures("no_machine_left")
def test_max_failures_counts_inputs_not_chunks(runtime: Runtime, tmp_path: Path) -> None:
    flag = tmp_path / "failing"
    flag.touch()
    ledger = str(tmp_path / "ledger")
    results = funcs.ledger_fail_while.map(
        range(FEW), [ledger] * FEW, [str(flag)] * FEW, return_exceptions=True, max_failures=2
    )
    with pytest.raises(flyjobs.TooManyFailuresError) as caught:
        list(results)
    failures = caught.value.failures
    assert len(failures) == 2
    assert all(index % 40 == 3 and isinstance(e, ValueError) for index, e in failures)
    assert [m for m in machines(runtime) if m.state not in ("destroyed", "stopped")] == []


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded runtime started in a project folder of its own (a journal under it)."""
    for var in ("FLY_API_TOKEN", "FLYJOBS_STORE", "BUCKET_NAME", "FLYJOBS_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    (folder / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    shutdown_runtime()
    yield folder
    shutdown_runtime()


@pytest.mark.slow
def test_a_resumed_chunked_batch_reruns_only_the_inputs_that_failed(
    project: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "failing"
    flag.touch()
    ledger = tmp_path / "ledger"
    inputs = [(x, str(ledger), str(flag)) for x in range(FEW)]
    first = list(funcs.ledger_fail_while.starmap(inputs, batch="chunky", return_exceptions=True))
    failed = [x for x in range(FEW) if x % 40 == 3]
    assert [x for x, v in enumerate(first) if isinstance(v, ValueError)] == failed
    ran_first = ledger.read_text().split()
    assert sorted(map(int, ran_first)) == list(range(FEW))  # each input once
    flag.unlink()
    second = list(funcs.ledger_fail_while.starmap(inputs, batch="chunky"))
    assert second == list(range(FEW))
    assert sorted(map(int, ledger.read_text().split()[len(ran_first) :])) == failed
