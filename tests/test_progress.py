"""The progress display: a live bar on a terminal, plain lines otherwise, both ending in the
count; and the batch summary's phase statistics."""

from __future__ import annotations

import io

import pytest

from flyjobs._progress import BatchStats, PhaseStats, Progress


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
