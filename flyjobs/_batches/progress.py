"""What a batch has done so far (`BatchStats`), its summary, and the progress display.

The display is a live bar (rich) on a terminal, a line updated in place in a Jupyter notebook
(an IPython display), or plain periodic lines on stderr otherwise; each ends with a
``done/total`` summary line. The batch updates the counts on the runtime's loop;
the display reads them from its own thread, a few times a second at most, so the cost per input
is a few integer increments.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from .._aio.notebook import in_notebook
from .._cost.ledger import Ledger

__all__ = ("BatchStats", "PhaseStats", "Progress", "Summary")

#: Timings kept per phase for its percentiles (a uniform sample of all inputs).
_SAMPLE = 2048
#: Seconds between plain progress lines (no terminal).
_PLAIN_INTERVAL_S = 5.0
#: Refreshes per second of the live bar.
_LIVE_HZ = 4.0
#: Seconds the API counts as "throttling" after its last 429.
_THROTTLE_SHOWN_S = 5.0


@dataclass
class PhaseStats:
    """Durations (s) of one phase over the inputs that went through it."""

    __module__ = "flyjobs"

    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    _sample: list[float] = field(default_factory=list, repr=False)
    _rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    def add(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)
        if len(self._sample) < _SAMPLE:
            self._sample.append(seconds)
        else:
            slot = self._rng.randrange(self.count)
            if slot < _SAMPLE:
                self._sample[slot] = seconds

    def percentile(self, fraction: float) -> float | None:
        """The ``fraction`` percentile (0.5: median) of the sampled durations, in seconds."""
        if not self._sample:
            return None
        ordered = sorted(self._sample)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def mean_s(self) -> float | None:
        """The mean duration in seconds."""
        return self.total_s / self.count if self.count else None


@dataclass(frozen=True)
class Summary:
    """A batch at its end (or now, if still running).

    :ivar total: inputs read from the iterable.
    :ivar done: inputs with a value.
    :ivar failed: inputs with an error.
    :ivar retried: attempts that were run again.
    :ivar machines: machines created.
    :ivar elapsed_s: seconds from the map's start to its end (or now).
    :ivar phases: per-phase durations: ``queued`` (read → handed to a machine), ``create``
        (create request → machine created, first inputs only), ``boot`` (created → function
        started, first inputs only), ``run`` (the function), ``deliver`` (function end →
        result in the inbox).
    :ivar late: results that arrived after their input was cancelled (a batch stopped by
        Ctrl-C or ``max_failures``, or an attempt given up), and were ignored.
    :ivar cost_usd: USD the batch's machines cost: each billed from its own start and exit
        events once it has exited (an estimate from this process's clock while it runs), at
        its guest's price in its region (`flyjobs._cost.prices`); with a resumed batch, what
        its earlier runs spent too.
    :ivar wasted_usd: the part of ``cost_usd`` spent on attempts that failed (retried or not).
    :ivar phases_usd: ``cost_usd`` by what the machines were doing: ``boot``, ``run`` and
        ``deliver`` (the inputs' phases on a machine, at its price), ``idle`` (the rest of
        their billed time: waiting for an input, exiting).
    :ivar busy_s: machine-seconds inputs held machines.
    :ivar idle_s: machine-seconds billed with no input on the machine.
    """

    __module__ = "flyjobs"

    total: int
    done: int
    failed: int
    retried: int
    machines: int
    elapsed_s: float
    phases: Mapping[str, PhaseStats]
    late: int = 0
    cost_usd: float = 0.0
    wasted_usd: float = 0.0
    phases_usd: Mapping[str, float] = field(default_factory=dict)
    busy_s: float = 0.0
    idle_s: float = 0.0

    def __str__(self) -> str:
        lines = [
            f"{self.done + self.failed}/{self.total} inputs: {self.done} done, {self.failed}"
            f" failed, {self.retried} retried, {self.machines} machines, {self.elapsed_s:.1f} s"
        ]
        if self.late:
            lines[0] += f"; {self.late} late results of cancelled inputs ignored"
        lines.append(
            f"  cost     ${self.cost_usd:.4f} (wasted on failed attempts ${self.wasted_usd:.4f})"
        )
        for name, phase in self.phases.items():
            if phase.count:
                p50, p95 = phase.percentile(0.5), phase.percentile(0.95)
                lines.append(
                    f"  {name:<8} n={phase.count:<6} median {p50 or 0:.3f} s"
                    f"  p95 {p95 or 0:.3f} s  max {phase.max_s:.3f} s"
                )
        return "\n".join(lines)


class BatchStats:
    """Counts and timings of one batch, written by the batch on the runtime's loop."""

    def __init__(self, total_hint: int | None = None, ledger: Ledger | None = None) -> None:
        #: what the batch's machines cost (see `Summary.cost_usd`)
        self.ledger = ledger
        self.started_at = time.time()
        self.ended_at: float | None = None
        #: The number of inputs as the iterables told it beforehand (``len()``, else their
        #: length hint), None when they did not.
        self.total_hint = total_hint
        #: Set once the last input has been read: then ``read`` is the total.
        self.all_read = False
        self.read = 0
        self.starting = 0
        self.running = 0
        self.done = 0
        self.failed = 0
        self.retried = 0
        self.machines = 0
        #: results delivered after their input was cancelled (see `Summary.late`)
        self.late = 0
        self.throttled_at: float | None = None
        self.phases = {
            name: PhaseStats() for name in ("queued", "create", "boot", "run", "deliver")
        }
        self._handed: dict[int, float] = {}
        self._created: dict[int, float] = {}
        #: inputs whose machine is being created (counted in ``starting``; the others held by
        #: a machine are counted in ``running``)
        self._starting: set[int] = set()
        #: Each input's phase durations (s) of its attempt in flight.
        self._timings: dict[int, dict[str, float]] = {}

    # Each input: read → started (handed to a machine: creating it, or its next input) →
    # [created] → delivered → done/failed (or retried → started again).

    def input_read(self) -> None:
        self.read += 1

    def inputs_ended(self) -> None:
        """The iterable has no more inputs: ``read`` is the total."""
        self.all_read = True

    @property
    def total(self) -> int | None:
        """How many inputs the batch has, None while unknown (the iterables told nothing and
        are not read to their end yet)."""
        if self.all_read or self.ended_at is not None:
            return self.read
        return None if self.total_hint is None else max(self.total_hint, self.read)

    def started(self, index: int, queued_at: float, *, creating: bool) -> None:
        now = time.time()
        self._handed[index] = now
        self._timings[index] = {}
        self._phase(index, "queued", now - queued_at)
        if creating:
            self._starting.add(index)
            self.starting += 1
        else:
            self.running += 1

    def created(self, index: int, others: Collection[int] = ()) -> None:
        """The machine of input ``index`` was created, holding ``others`` too (a first chunk):
        they are running now."""
        now = time.time()
        self.machines += 1
        for each in (index, *others):
            self._run_now(each)
        self._created[index] = now
        handed = self._handed.get(index)
        if handed is not None:
            self._phase(index, "create", now - handed)

    def _run_now(self, index: int) -> None:
        if index in self._starting:
            self._starting.discard(index)
            self.starting -= 1
            self.running += 1

    def delivered(self, index: int, timings: Mapping[str, float]) -> None:
        now = time.time()
        start, end = timings.get("function_start"), timings.get("function_end")
        created = self._created.pop(index, None)
        if created is not None and start is not None:
            self._phase(index, "boot", start - created)
        if start is not None and end is not None:
            self._phase(index, "run", end - start)
        if end is not None:
            self._phase(index, "deliver", now - end)

    def _phase(self, index: int, name: str, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.phases[name].add(seconds)
        timings = self._timings.get(index)
        if timings is not None:
            timings[name] = seconds

    def settled(self, index: int, outcome: str) -> dict[str, float]:
        """The attempt of input ``index`` ended: ``done``, ``failed`` or ``retried``; return
        its phase durations in seconds."""
        self._handed.pop(index, None)
        self._created.pop(index, None)
        self._run_now(index)
        self.running -= 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        return self._timings.pop(index, {})

    def finished(self) -> None:
        self.ended_at = time.time()

    def late_delivery(self) -> None:
        self.late += 1

    @property
    def queued(self) -> int:
        """Inputs read and waiting for a machine."""
        return max(0, self.read - self.done - self.failed - self.starting - self.running)

    def summary(self) -> Summary:
        """The batch so far (see `Summary`)."""
        end = self.ended_at or time.time()
        return Summary(
            total=self.read,
            done=self.done,
            failed=self.failed,
            retried=self.retried,
            machines=self.machines,
            elapsed_s=end - self.started_at,
            phases=dict(self.phases),
            late=self.late,
            **self._costs(),
        )

    def _costs(self) -> dict[str, Any]:
        ledger = self.ledger
        if ledger is None:
            return {}
        cost_usd = ledger.usd
        seconds = sum(m.seconds for m in ledger.machines)
        per_s = cost_usd / seconds if seconds > 0 else 0.0
        phases_usd = {
            name: self.phases[name].total_s * per_s for name in ("boot", "run", "deliver")
        }
        # The phases are timed by this process's clock, the bill by the machine's events:
        # where they disagree, the bill wins.
        on_machine = sum(phases_usd.values())
        if on_machine > cost_usd:
            phases_usd = {name: usd * cost_usd / on_machine for name, usd in phases_usd.items()}
        phases_usd["idle"] = max(0.0, cost_usd - sum(phases_usd.values()))
        return {
            "cost_usd": cost_usd + ledger.earlier_usd,
            "wasted_usd": ledger.wasted_usd,
            "phases_usd": phases_usd,
            "busy_s": ledger.busy_s,
            "idle_s": ledger.idle_s,
        }


class Progress:
    """Shows a batch's progress on stderr until `stop` (see the module docstring).

    :param throttled: returns whether the API throttled requests lately.
    :param clock: unix time now, in seconds (what the batch's times are read against).
    """

    def __init__(
        self,
        stats: BatchStats,
        label: str,
        *,
        throttled: Any,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stats = stats
        self._clock = clock
        self._label = label
        self._throttled = throttled
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._live = bool(getattr(self._stream, "isatty", lambda: False)())
        # A notebook's stderr is no terminal, and shows a line every few seconds at best.
        self._notebook = stream is None and not self._live and in_notebook()
        self._thread = threading.Thread(target=self._run, name="flyjobs-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the display with the ``done/total`` summary line."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        if self._live:
            self._run_live()
        elif self._notebook:
            self._run_notebook()
        else:
            while not self._stop.wait(_PLAIN_INTERVAL_S):
                self._line()
            self._line(final=True)

    def _counts(self) -> str:
        s = self._stats
        text = (
            f"queued {s.queued} starting {s.starting} running {s.running} done {s.done}"
            f" failed {s.failed} retried {s.retried}"
        )
        if s.late:
            text += f" late {s.late}"
        if s.ledger is not None:
            text += f" · ${s.ledger.usd + s.ledger.earlier_usd:.4f}"
        if self._throttled():
            text += " (API throttling)"
        return text

    def _eta_s(self) -> float | None:
        # Only against a known total: inputs read so far would promise an end too soon.
        s, total = self._stats, self._stats.total
        finished = s.done + s.failed
        elapsed = self._clock() - s.started_at
        if total is None or not finished or elapsed <= 0:
            return None
        return (total - finished) * elapsed / finished

    def _text(self, *, final: bool = False) -> str:
        s = self._stats
        total = s.total
        shown = total if total is not None else "?"
        text = f"{self._label}: {s.done + s.failed}/{shown} · {self._counts()}"
        eta = self._eta_s()
        if not final and eta is not None:
            text += f" · ETA {eta:.0f} s"
        if final:
            text += f" · {self._clock() - s.started_at:.1f} s"
        return text

    def _line(self, *, final: bool = False) -> None:
        self._stream.write(self._text(final=final) + "\n")
        self._stream.flush()

    def _run_notebook(self) -> None:
        from IPython.display import display  # optional dependency

        def shown(text: str) -> dict[str, str]:
            return {"text/plain": text}

        handle = display(shown(self._text()), raw=True, display_id=True)
        while not self._stop.wait(1 / _LIVE_HZ):
            handle.update(shown(self._text()), raw=True)
        handle.update(shown(self._text(final=True)), raw=True)

    def _run_live(self) -> None:
        from rich.console import Console  # optional dependency

        # optional dependency
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self._stream)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.completed}/{task.fields[shown]}"),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[eta]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, auto_refresh=False) as bar:
            task = bar.add_task(self._label, total=None, shown="?", counts="", eta="")
            while True:
                stopping = self._stop.wait(1 / _LIVE_HZ)
                s, total = self._stats, self._stats.total
                eta = self._eta_s()
                bar.update(
                    task,
                    completed=s.done + s.failed,
                    total=total,
                    shown=total if total is not None else "?",
                    counts=self._counts(),
                    eta=f"ETA {eta:.0f} s" if eta is not None and not stopping else "",
                )
                bar.refresh()
                if stopping:
                    break
