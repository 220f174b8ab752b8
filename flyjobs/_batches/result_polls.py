"""When a store-mode batch looks at the store for its results next.

The store tells nobody when a result arrives: the caller lists it (one listing for all of a
batch's machines, `flyjobs._batches.batch`). A late look makes a result late, and a machine
running quick inputs may wait for it: its next chunk is written once its results are seen.
`ResultPolls` spaces the looks:

- after a look that read results, the next goes at once (while results come in, more are on
  their way: a machine delivers what it has every `flyjobs._wire.chunk.BUNDLE_S`);
- after one that read none, it waits `RESULT_POLL_MIN_S`, doubling with each look that reads
  none, up to the inputs' mean run time (a machine running quick inputs delivers all the time)
  within `RESULT_POLL_MIN_S` and `RESULT_POLL_MAX_S`;
- before any result came, the looks stay `RESULT_POLL_MIN_S` apart for `FIRST_RESULTS_S` (a
  machine's boot and a quick input's run): the first results decide how large every machine's
  next chunk is. After that, they space out up to `RESULT_POLL_MAX_S`.

May import: nothing of flyjobs (the batch applies it).
"""

from __future__ import annotations

__all__ = ("FIRST_RESULTS_S", "RESULT_POLL_MAX_S", "RESULT_POLL_MIN_S", "ResultPolls")

#: Most seconds between two looks for results while machines run.
RESULT_POLL_MAX_S = 0.25
#: Least seconds between two looks that read no result.
RESULT_POLL_MIN_S = 0.05
#: Seconds from the first look during which, while no result came yet, looks stay
#: `RESULT_POLL_MIN_S` apart.
FIRST_RESULTS_S = 2.0


class ResultPolls:
    """The spacing of a batch's looks for results (see the module docstring).

    :param started_at: when the first look is (monotonic seconds).
    """

    def __init__(self, started_at: float) -> None:
        self._started_at = started_at
        self._interval = RESULT_POLL_MIN_S

    def after(self, *, read: bool, run_s: float | None, now: float) -> float:
        """Seconds to wait before the next look, after one that ``read`` results or none.

        :param run_s: the inputs' mean run time so far; None while no result came.
        :param now: the time of this look (monotonic seconds).
        """
        if read:
            self._interval = RESULT_POLL_MIN_S
            return 0.0
        if run_s is not None:
            most = min(max(run_s, RESULT_POLL_MIN_S), RESULT_POLL_MAX_S)
        elif now - self._started_at < FIRST_RESULTS_S:
            most = RESULT_POLL_MIN_S
        else:
            most = RESULT_POLL_MAX_S
        wait = min(self._interval, most)
        self._interval = min(2 * wait, most)
        return wait
