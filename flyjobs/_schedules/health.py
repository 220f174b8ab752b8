"""Whether a scheduled function runs when it should: cadence, last run, late and missed ticks,
consecutive failures, as ``flyjobs schedule ls`` shows them and ``flyjobs schedule check``
judges them.

Everything is worked out from the run records the machine wrote (`flyjobs._schedules.status`)
and the schedule's own ticks, on the schedules' clock (`schedule_now`):

- a tick is **late** when it fell due more than the grace period ago and nothing was recorded
  for it (no run started, no skip), while nothing later was either: the run may still come (a
  Fly machine starting late, a resident coming back);
- a tick is **missed** when it passed without a run and the schedule has moved on (a later
  tick was recorded, or the following tick is late too), or when a cron resident coming back
  recorded it as ``missed``;
- **consecutive failures** are the runs that did not succeed since the last one that did.

Only what happened since the last successful run counts: a schedule that missed a tick and then
ran well is healthy again (``schedule ls`` still shows its runs).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .._declare.schedule import cron_ticks, describe
from .._wire.machine import SCHEDULE_INTERVALS_S, TIME_ORIGIN_ENV, TIME_SCALE_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .status import Run

__all__ = ("Health", "assess", "default_grace_s", "schedule_now", "to_schedule_clock")

#: Statuses of a run that did not succeed.
_FAILED = frozenset({"failed", "timeout", "crashed"})
#: Record statuses that are no finished run.
_NOT_RUNS = frozenset({"pending", "running", "skipped", "missed"})
#: Share of the cadence a run may start late before it counts as late, and its floor (s).
GRACE_SHARE = 0.1
GRACE_MIN_S = 60.0
#: Most ticks looked at between the last good run and now (a minutely cron down for days).
_MAX_TICKS = 10_000


@dataclass(frozen=True)
class Health:
    """How a scheduled function keeps its schedule (times are unix s on the schedules' clock).

    :ivar cadence: the expected cadence: ``hourly``, or a cron expression with the interval
        between its next two ticks (``cron 0 3 * * * (UTC), every 24h``).
    :ivar grace_s: seconds a tick may go unrun before it is late.
    :ivar last_run: when the last finished run started, and its status (``ok``, ``failed``...).
    :ivar late: the tick overdue by more than ``grace_s`` with nothing recorded for it, if any.
    :ivar missed: the ticks missed since the last successful run, oldest first.
    :ivar consecutive_failures: runs that did not succeed since the last one that did.
    """

    cadence: str
    grace_s: float
    last_run: float | None = None
    last_status: str = ""
    late: float | None = None
    missed: list[float] = field(default_factory=list)
    consecutive_failures: int = 0

    @property
    def healthy(self) -> bool:
        """Not late, nothing missed, not failing."""
        return self.late is None and not self.missed and not self.consecutive_failures

    def problems(self, when: Any) -> list[str]:
        """What is wrong, one phrase each; ``when`` formats a time."""
        out = []
        if self.late is not None:
            out.append(f"late (due {when(self.late)}, grace {_span(self.grace_s)})")
        if self.missed:
            ticks = "tick" if len(self.missed) == 1 else "ticks"
            out.append(f"missed {len(self.missed)} {ticks} (last due {when(self.missed[-1])})")
        if self.consecutive_failures:
            runs = "run" if self.consecutive_failures == 1 else "runs"
            out.append(f"failing ({self.consecutive_failures} {runs} in a row)")
        return out


def schedule_now() -> float:
    """Now on the schedules' clock: unix time, unless ``FLYJOBS_TIME_SCALE`` and
    ``FLYJOBS_TIME_ORIGIN`` are set (as ``flyjobs dev --time-scale`` prints them), then the
    clock its machines read."""
    return to_schedule_clock(time.time())


def to_schedule_clock(unix_s: float) -> float:
    """Real unix time ``unix_s`` on the schedules' clock (see `schedule_now`)."""
    scale = float(os.environ.get(TIME_SCALE_ENV) or 1.0)
    origin = float(os.environ.get(TIME_ORIGIN_ENV) or 0.0)
    return origin + (unix_s - origin) * scale


def default_grace_s(interval_s: float) -> float:
    """The grace period of a cadence of ``interval_s`` seconds: a tenth of it, at least 60 s."""
    return max(GRACE_MIN_S, GRACE_SHARE * interval_s)


def assess(
    spec: dict[str, Any],
    history: Sequence[Run],
    *,
    now: float,
    since: float,
    running: bool = False,
    grace_s: float | None = None,
) -> Health:
    """The health of a schedule ``spec`` (`flyjobs._declare.schedule.schedule_spec`) whose
    machine recorded ``history`` (oldest first), at ``now``.

    :param since: when the machine was made (its first tick can be no earlier).
    :param running: whether a run is going now (a Fly-scheduled machine that is started).
    :param grace_s: the grace period; default `default_grace_s` of the cadence.
    """
    interval = _interval_s(spec, now)
    grace = default_grace_s(interval) if grace_s is None else grace_s
    runs = [run for run in history if run.status not in _NOT_RUNS]
    last_ok = next((i for i in range(len(runs) - 1, -1, -1) if runs[i].status == "ok"), -1)
    failures = sum(1 for run in runs[last_ok + 1 :] if run.status in _FAILED)
    start = _tick_of(runs[last_ok]) if last_ok >= 0 else None
    last = runs[-1] if runs else None
    recorded_missed = [
        run.tick
        for run in history
        if run.status == "missed" and run.tick is not None and (start is None or run.tick > start)
    ]
    if "cron" in spec:
        late, missed = _cron_gaps(spec, history, start, since=since, until=now - grace)
    else:
        late, missed = _interval_gaps(interval, history, start, since, now - grace, running)
    return Health(
        cadence=_cadence(spec, interval),
        grace_s=grace,
        last_run=last.started if last else None,
        last_status=last.status if last else "",
        late=late,
        missed=sorted({*recorded_missed, *missed}),
        consecutive_failures=failures,
    )


def _tick_of(run: Run) -> float:
    return float(run.tick) if run.tick is not None else run.started


def _cron_gaps(
    spec: dict[str, Any], history: Sequence[Run], start: float | None, *, since: float, until: float
) -> tuple[float | None, list[float]]:
    """(the late tick, the missed ticks) of a cron schedule between ``start`` and ``until``."""
    recorded = [(run.status, float(run.tick)) for run in history if run.tick is not None]
    if start is None:
        # No good run yet: from the first tick its resident took (or the machine's creation).
        first = min((tick for _, tick in recorded), default=None)
        start = since if first is None else first - 1e-3
    accounted = {tick for status, tick in recorded if status != "pending"}
    gaps: list[float] = []
    for tick in cron_ticks(spec, start):
        if tick > until or len(gaps) >= _MAX_TICKS:
            break
        if tick not in accounted:
            gaps.append(tick)
    # A gap before a later record (a run, or the next tick a resident that came back waits
    # for) was missed; the last gap with nothing after it is late: it may still run.
    latest = max((tick for _, tick in recorded), default=-math.inf)
    if gaps and latest <= gaps[-1]:
        return gaps[-1], gaps[:-1]
    return None, gaps


def _interval_gaps(
    interval: float,
    history: Sequence[Run],
    start: float | None,
    since: float,
    until: float,
    running: bool,
) -> tuple[float | None, list[float]]:
    """(the late tick, the missed ticks) of a Fly schedule: its ticks are fuzzy, so they are
    counted in whole intervals from the last recorded one (from creation, when Fly first runs
    it, if none)."""
    ticks = [_tick_of(run) for run in history if run.status != "pending"]
    last = max(ticks, default=since - interval)
    if start is not None:
        last = max(last, start)
    due = math.floor((until - last) / interval)
    if running:
        due -= 1  # the run going now is the latest tick's
    if due < 1:
        return None, []
    gaps = [last + interval * i for i in range(1, min(due, _MAX_TICKS) + 1)]
    return gaps[-1], gaps[:-1]


def _interval_s(spec: dict[str, Any], now: float) -> float:
    if "cron" not in spec:
        return float(SCHEDULE_INTERVALS_S.get(spec.get("every", ""), 3600))
    upcoming = cron_ticks(spec, now)
    first = next(upcoming, None)
    second = next(upcoming, None)
    return second - first if first is not None and second is not None else 86400.0


def _cadence(spec: dict[str, Any], interval: float) -> str:
    if "cron" in spec:
        return f"{describe(spec)}, every {_span(interval)}"
    return describe(spec)


def _span(seconds: float) -> str:
    """``90`` → ``1m30s``; ``7200`` → ``2h``."""
    seconds = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
