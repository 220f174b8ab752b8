"""How many machines a batch whose machines pull their work should run: the batch's width.

A machine that pulls its inputs takes the next one as soon as it is done, so a batch of small,
fast inputs is finished by a few machines sooner than many can be made: each create costs a
create (rate-limited on Fly) and a boot, and pays for itself only if the machines already
running would still have work when it is ready. `Width` learns, for each machine, how long it
took from its create to its first input's start (its boot) and how long its functions ran, as
the results say (the round trip around them is the caller's cost, which chunks share out and
more machines would not shorten); the batch asks it before each further machine. Another machine
is worth it while the inputs waiting would keep the running machines busy longer than a new one
takes to boot::

    waiting inputs x seconds per input / machines running  >  boot seconds

(seconds per input: the median of the machines' last round trips, so that one slow input, or a
machine the operating system held back, does not widen the batch).

Until a machine has delivered a result nothing is known: the batch starts `BLIND_MACHINES`
(what Fly creates at once, its create burst), and may start twice as many every
`BLIND_DOUBLING_S`, or every boot of the function's last batch in this process if longer
(machines that boot slowly say nothing of the inputs for longer, and on the local emulator
slow the boots of the others), after its first (on Fly the
create rate, one a second, is slower still), so a batch of quick inputs knows how quick before
it has made many machines, and one of slow inputs is at full width within a few boots.

A machine whose round trip runs longer than `STALL_S` and twice its last one counts the time
past that as the time of an input, so a batch whose inputs turn slow widens again (a stall of
the caller's own loop, a few dozen milliseconds on a busy laptop, does not).

May import: nothing of flyjobs (the batch applies it).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

__all__ = ("Gauge", "Width")

#: Machines started before any has delivered a result (Fly's create burst).
BLIND_MACHINES = 3
#: Seconds in which the machines a batch may start without a result double.
BLIND_DOUBLING_S = 0.1
#: Seconds a round trip may take (beyond twice the machine's last) before its inputs count as
#: slow.
STALL_S = 1.0
#: Longest wait, in seconds, before the batch asks again (without a result to wake it).
MAX_RECHECK_S = 0.5
#: Shortest wait, in seconds, before the batch asks again.
MIN_RECHECK_S = 0.005


class Gauge:
    """One machine's timings, as the batch reports them (see `Width`)."""

    def __init__(self, width: Width, asked_at: float) -> None:
        self._width = width
        self._asked_at = asked_at
        #: seconds from the create to the first input's start; None until its first result
        self.boot_s: float | None = None
        #: seconds a function ran in its last round trip (the mean)
        self._per_input_s = 0.0
        #: seconds its last round trip took, from handing its inputs to their results
        self._round_trip_s = 0.0
        self._handed_at = asked_at

    def first_result(self, run_s: float) -> None:
        """Its first input (handed with the create) came back; its function ran ``run_s``."""
        now = self._width.clock()
        self._round_trip_s = now - self._asked_at
        self.boot_s = max(self._round_trip_s - run_s, 0.0)
        self._per_input_s = run_s
        self._width.boot_samples.append(self.boot_s)
        self._width.changed()

    def round_trip(self, count: int, seconds: float, run_s: float) -> None:
        """A chunk of ``count`` inputs came back ``seconds`` after it was handed; their
        functions ran ``run_s`` in all."""
        self._per_input_s = run_s / max(count, 1)
        self._round_trip_s = seconds
        self._width.changed()

    def handed(self) -> None:
        """It was handed its next inputs."""
        self._handed_at = self._width.clock()

    def end(self) -> None:
        """The machine ended (it takes no more inputs)."""
        self._width.gauges.discard(self)
        self._width.changed()

    def per_input_s(self, now: float) -> float:
        """Seconds an input takes it: as in its last round trip, or, if the one under way has
        run longer than `STALL_S` and twice the last, the time past that (one input that runs
        long has the machine give the others of its chunk back)."""
        stalled_s = now - self._handed_at - max(2 * self._round_trip_s, STALL_S)
        return max(self._per_input_s, stalled_s)


class Width:
    """Decides whether a batch starts another machine (see the module docstring).

    :param clock: monotonic seconds (injected in tests).
    :param on_change: called when a result or a machine's end may change the answer.
    :param prior_boot_s: the boot seconds of an earlier batch of the same function, if known.
    :param active: False: every machine is worth starting (a batch whose machines each take
        their own work, not the next waiting input).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] = lambda: None,
        prior_boot_s: float | None = None,
        active: bool = True,
    ) -> None:
        self._active = active
        self._doubling_s = max(BLIND_DOUBLING_S, prior_boot_s or 0.0)
        self.clock = clock
        self.changed = on_change
        self.gauges: set[Gauge] = set()
        self.boot_samples: list[float] = []
        self._first_asked: float | None = None

    def asked(self) -> Gauge:
        """A machine is being started now: its gauge, for the batch to report on."""
        now = self.clock()
        gauge = Gauge(self, now)
        self.gauges.add(gauge)
        if self._first_asked is None:
            self._first_asked = now
        return gauge

    def wait_s(self, waiting: int) -> float:
        """0 if another machine is worth starting now, with ``waiting`` inputs not handed to
        any machine; else the seconds after which to ask again (sooner if `changed` is
        called)."""
        if not self._active:
            return 0.0
        now = self.clock()
        ready = [gauge for gauge in self.gauges if gauge.boot_s is not None]
        if not ready:  # (a machine is ready once it gave a boot sample)
            return self._blind_wait_s(now)
        boot_s = sum(self.boot_samples) / len(self.boot_samples)
        recheck_s = min(max(boot_s / 2, MIN_RECHECK_S), MAX_RECHECK_S)
        if waiting <= 0:
            return recheck_s
        per_input_s = statistics.median(gauge.per_input_s(now) for gauge in ready)
        if waiting * per_input_s / len(self.gauges) > boot_s:
            return 0.0
        return recheck_s

    def _blind_wait_s(self, now: float) -> float:
        """`wait_s` before any machine running has delivered a result."""
        if self._first_asked is None:
            return 0.0
        doublings = (now - self._first_asked) / self._doubling_s
        if len(self.gauges) < BLIND_MACHINES * 2 ** min(doublings, 32.0):
            return 0.0
        needed = math.log2((len(self.gauges) + 1) / BLIND_MACHINES)
        return max((needed - doublings) * self._doubling_s, MIN_RECHECK_S)

    @property
    def boot_s(self) -> float | None:
        """The median boot seconds of the batch's machines so far (None before a result)."""
        return statistics.median(self.boot_samples) if self.boot_samples else None
