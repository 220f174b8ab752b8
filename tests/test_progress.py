"""The progress display: a live bar on a terminal, plain lines otherwise, both ending in the
count; and the batch summary's phase statistics."""

from __future__ import annotations

import io
import sys
import threading
import types
from collections.abc import Iterator

import pytest
import remote_funcs as funcs

from flyjobs._batches.map import input_count
from flyjobs._batches.progress import BatchStats, PhaseStats, Progress
from flyjobs._calls.runtime import Runtime
from flyjobs._cost.ledger import Ledger
from flyjobs._cost.prices import prices_for
from flyjobs.machines import MachineEvent


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _finished_batch(inputs: int) -> BatchStats:
    stats = BatchStats(total_hint=inputs)
    for index in range(inputs):
        stats.input_read()
        stats.started(index, queued_at=stats.started_at, creating=index == 0)
        if index == 0:
            stats.created(index)
        stats.delivered(index, {"function_start": 1.0, "function_end": 1.5})
        stats.settled(index, "failed" if index == 2 else "done")
    stats.finished()
    return stats


def test_live_bar_on_a_terminal_shows_counts_and_throttling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: nothing is cut
    terminal = _Terminal()
    progress = Progress(_finished_batch(5), "square.map", throttled=lambda: True, stream=terminal)
    progress.stop()
    shown = terminal.getvalue()
    assert "\x1b[" in shown  # drawn with terminal controls, not plain lines
    assert "5/5" in shown and "done 4" in shown and "failed 1" in shown
    assert "API throttling" in shown


def test_plain_lines_without_a_terminal_end_in_the_count() -> None:
    stream = io.StringIO()
    progress = Progress(_finished_batch(3), "square.map", throttled=lambda: False, stream=stream)
    progress.stop()
    (last,) = stream.getvalue().splitlines()[-1:]
    assert last.startswith("square.map: 3/3")
    assert "\x1b[" not in stream.getvalue()


def test_progress_shows_the_cost_so_far() -> None:
    stats = _finished_batch(3)
    stats.ledger = Ledger(prices_for(None))
    machine = stats.ledger.machine("m1", usd_per_s=0.5, region="lcl")
    machine.settle([_event("start", 1_000), _event("exit", 5_000)])  # 4 s at $0.50/s
    stream = io.StringIO()
    Progress(stats, "square.map", throttled=lambda: False, stream=stream).stop()
    assert "$2.0000" in stream.getvalue().splitlines()[-1]
    assert stats.summary().cost_usd == 2.0


def _event(kind: str, at_ms: int) -> MachineEvent:
    return MachineEvent(type=kind, timestamp=at_ms)


def test_summary_phases_and_percentiles() -> None:
    summary = _finished_batch(4).summary()
    assert (summary.total, summary.done, summary.failed, summary.machines) == (4, 3, 1, 1)
    assert summary.phases["run"].count == 4
    assert summary.phases["run"].percentile(0.5) == 0.5
    assert summary.phases["create"].count == 1
    phase = PhaseStats()
    for value in range(10_000):
        phase.add(float(value))
    assert phase.count == 10_000 and phase.max_s == 9999.0
    median = phase.percentile(0.5)
    assert median is not None and 4000 < median < 6000  # a uniform sample of all of them


def test_late_results_of_cancelled_inputs_are_counted_in_the_summary() -> None:
    stats = BatchStats(3)
    assert "late" not in str(stats.summary())
    stats.late_delivery()
    stats.late_delivery()
    assert stats.summary().late == 2
    assert "2 late results of cancelled inputs ignored" in str(stats.summary())


def _halfway(total_hint: int | None) -> BatchStats:
    """13 inputs read and finished, the iterable not read to its end."""
    stats = BatchStats(total_hint=total_hint)
    for index in range(13):
        stats.input_read()
        stats.started(index, queued_at=stats.started_at, creating=False)
        stats.settled(index, "done")
    return stats


def _first_line(stats: BatchStats) -> str:
    stream = io.StringIO()
    progress = Progress(
        stats, "f.map", throttled=lambda: False, stream=stream, clock=lambda: stats.started_at + 6
    )
    progress._line()
    progress.stop()
    return stream.getvalue().splitlines()[0]


def test_the_total_is_the_iterable_s_length_and_the_eta_counts_on_it() -> None:
    line = _first_line(_halfway(total_hint=2000))
    assert line.startswith("f.map: 13/2000 ·")
    assert line.endswith(f"ETA {(2000 - 13) * 6 / 13:.0f} s")


def test_no_eta_until_an_unsized_iterable_is_read_to_its_end() -> None:
    stats = _halfway(total_hint=None)
    line = _first_line(stats)
    assert line.startswith("f.map: 13/? ·")  # not "13/13", which promised an end in 0 s
    assert "ETA" not in line
    stats.inputs_ended()
    assert _first_line(stats).startswith("f.map: 13/13 ·")


def test_the_input_count_comes_from_len_else_the_length_hint() -> None:
    assert input_count([range(2000)]) == 2000
    assert input_count([range(2000), [1, 2, 3]]) == 3  # zipped: the shortest
    assert input_count([iter([1, 2])]) == 2  # an iterator's length hint
    assert input_count([(x for x in range(3))]) is None
    assert input_count([range(3), (x for x in range(3))]) is None


@pytest.mark.usefixtures("no_machine_left")
def test_a_map_knows_its_total_before_reading(runtime: Runtime) -> None:
    def inputs() -> Iterator[int]:
        yield from range(3)

    with funcs.echo.map(range(40), max_machines=1) as results:
        assert results._run.batch.stats.total == 40
    with funcs.add.starmap([(1, 2), (3, 4)]) as results:
        assert results._run.batch.stats.total == 2
    with funcs.echo.map(inputs(), max_machines=1) as results:
        assert list(results) == [0, 1, 2]
        assert results._run.batch.stats.total == 3  # once read to its end


class ZMQInteractiveShell:
    """Stands in for ipykernel's shell: this process is a notebook's kernel."""


class _Display:
    """Stands in for IPython's display: what a notebook cell would show, in order."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.updated = threading.Event()

    def display(self, data: dict[str, str], *, raw: bool, display_id: bool) -> _Display:
        assert raw and display_id
        self.shown.append(data["text/plain"])
        return self

    def update(self, data: dict[str, str], *, raw: bool) -> None:
        self.shown.append(data["text/plain"])
        self.updated.set()


def test_in_a_notebook_the_progress_is_one_display_updated_in_place(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cell = _Display()
    shell = ZMQInteractiveShell()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(sys.modules, "IPython.display", types.SimpleNamespace(display=cell.display))
    stats = _halfway(total_hint=20)
    progress = Progress(stats, "f.map", throttled=lambda: False, clock=lambda: stats.started_at + 6)
    assert cell.updated.wait(10)  # updated while the map runs, not only at its end
    progress.stop()
    assert cell.shown[0].startswith("f.map: 13/20 ·")
    assert cell.shown[1].endswith(f"ETA {7 * 6 / 13:.0f} s")
    assert cell.shown[-1].endswith("· 6.0 s")  # the summary line
    assert capsys.readouterr().err == ""  # nothing on stderr besides


def test_counts_of_a_machine_created_with_several_inputs_never_go_negative() -> None:
    # A store-mode machine is created with a chunk of inputs; one fails with it (retried), the
    # others never ran (given back), then all run on a second machine.
    stats = BatchStats(total_hint=3)
    for index in range(3):
        stats.input_read()
        stats.started(index, queued_at=stats.started_at, creating=True)
    stats.created(0, [1, 2])
    assert (stats.starting, stats.running) == (0, 3)
    for index in range(3):
        stats.settled(index, "retried")
    for index in range(3):
        stats.started(index, queued_at=stats.started_at, creating=index > 0)
        stats.settled(index, "done")
    assert (stats.queued, stats.starting, stats.running, stats.done) == (0, 0, 0, 3)
    assert "starting 0 running 0" in _plain_text(stats)


def _plain_text(stats: BatchStats) -> str:
    stream = io.StringIO()
    Progress(stats, "f.map", throttled=lambda: False, stream=stream).stop()
    return stream.getvalue()
