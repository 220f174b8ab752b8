"""How a store-mode batch spaces its looks for results (`flyjobs._batches.result_polls`). No
clock: each look's time is given."""

from __future__ import annotations

from flyjobs._batches.result_polls import (
    FIRST_RESULTS_S,
    RESULT_POLL_MAX_S,
    RESULT_POLL_MIN_S,
    ResultPolls,
)


def _misses(polls: ResultPolls, looks: int, run_s: float | None, now: float) -> list[float]:
    return [polls.after(read=False, run_s=run_s, now=now) for _ in range(looks)]


def test_a_look_that_read_results_is_followed_by_the_next_at_once() -> None:
    polls = ResultPolls(0.0)
    _misses(polls, 5, 0.5, 10.0)
    assert polls.after(read=True, run_s=0.5, now=10.0) == 0.0
    # And the looks that read none start again from the least interval.
    assert _misses(polls, 2, 0.5, 10.0) == [RESULT_POLL_MIN_S, 2 * RESULT_POLL_MIN_S]


def test_before_the_first_results_looks_stay_close_then_space_out() -> None:
    polls = ResultPolls(100.0)
    # The first results size every machine's next chunk: looked for often at first.
    assert _misses(polls, 4, None, 100.0 + FIRST_RESULTS_S / 2) == [RESULT_POLL_MIN_S] * 4
    # None for a while (long inputs): the looks space out up to the most.
    late = _misses(polls, 4, None, 100.0 + FIRST_RESULTS_S)
    assert late == [RESULT_POLL_MIN_S, 0.1, 0.2, RESULT_POLL_MAX_S]


def test_looks_space_out_no_further_than_the_inputs_run() -> None:
    # Quick inputs: their machines deliver all the time; a look that read none is soon followed.
    assert _misses(ResultPolls(0.0), 4, 1e-5, 10.0) == [RESULT_POLL_MIN_S] * 4
    assert _misses(ResultPolls(0.0), 4, 0.12, 10.0) == [RESULT_POLL_MIN_S, 0.1, 0.12, 0.12]
    assert _misses(ResultPolls(0.0), 5, 30.0, 10.0) == [0.05, 0.1, 0.2, 0.25, 0.25]
