"""Schedules of remote functions: Fly's native intervals and `Cron` expressions.

Imported when a module decorates a function (so also by the worker on every machine), and by a
scheduled run for its cron ticks (`cron_ticks`): standard library only (``cronsim`` is imported
where it is used), and only cheap checks run at decoration. A cron expression is parsed in full,
with its time zone, by ``flyjobs schedule deploy`` (`check_cron`), before any machine is made.

How each kind runs (``flyjobs schedule deploy`` makes one machine per function):

- ``"hourly"``, ``"daily"``, ``"weekly"``, ``"monthly"``: Fly's own ``config.schedule``. Fly
  starts the machine once at creation, then every interval counted from creation (fuzzily),
  and never while a run is still going; the worker records the tick it skipped.
- `Cron`: Fly has no cron, so the machine is a small resident scheduler (restart policy
  ``always``). It sleeps until the next tick of the expression in its time zone, runs the
  function in a child process, and after the run records every tick that fell due while the
  run was going as skipped. Ticks are taken strictly after the last one handled, so none runs
  twice; the resident costs a machine that is always on. With ``alert_url`` or
  ``catch_up="latest"`` its root filesystem is kept, so that when it comes back it records the
  ticks that fell while it was down as missed (and alerts them), or runs the latest one once.
"""

from __future__ import annotations

from .._exceptions import ConfigError
from .._wire.machine import SCHEDULE_INTERVALS_S

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

__all__ = (
    "CATCH_UP",
    "INTERVALS",
    "Cron",
    "check_alert_url",
    "check_cron",
    "check_schedule",
    "cron_ticks",
    "redacted_url",
    "schedule_spec",
)

#: The ``schedule=`` strings Fly runs natively.
INTERVALS = tuple(SCHEDULE_INTERVALS_S)
#: What a `Cron` resident may do with the ticks missed while it was down.
CATCH_UP = ("none", "latest")


class Cron:
    """A cron schedule: ``flyjobs.Cron("0 3 * * *", tz="Europe/Paris")``.

    :param expression: five fields (minute hour day-of-month month day-of-week), or six with
        seconds first, in the syntax of Debian cron (``*/15``, ``1-5``, ``MON``, ``L``...).
    :param tz: the IANA time zone the expression is read in (default ``"UTC"``); ticks follow
        its daylight-saving changes as Debian cron does.
    :param catch_up: what the resident does with the ticks that fell while it was down (a host
        failure, a stop, a redeploy): ``"none"`` (the default) records them as missed and
        waits for the next tick; ``"latest"`` runs the most recent of them once, as soon as it
        is back, and records the others as missed.
    :raises ConfigError: the expression does not have 5 or 6 fields (the full check, fields and
        time zone, runs at deploy), or ``catch_up`` is neither ``"none"`` nor ``"latest"``.
    """

    __module__ = "flyjobs"

    __slots__ = ("catch_up", "expression", "tz")

    expression: str
    tz: str
    catch_up: str

    def __init__(self, expression: str, *, tz: str = "UTC", catch_up: str = "none") -> None:
        fields = expression.split() if isinstance(expression, str) else []
        if len(fields) not in (5, 6):
            raise ConfigError(
                f"Cron({expression!r}): a cron expression has 5 fields (minute hour"
                " day-of-month month day-of-week), or 6 with seconds first"
            )
        if catch_up not in CATCH_UP:
            raise ConfigError(
                f"Cron(catch_up={catch_up!r}): use 'none' (ticks missed while the scheduler"
                " was down are recorded, not run) or 'latest' (the most recent one runs once)"
            )
        object.__setattr__(self, "expression", " ".join(fields))
        object.__setattr__(self, "tz", tz)
        object.__setattr__(self, "catch_up", catch_up)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Cron is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cron):
            return NotImplemented
        return (self.expression, self.tz, self.catch_up) == (
            other.expression,
            other.tz,
            other.catch_up,
        )

    def __hash__(self) -> int:
        return hash((self.expression, self.tz, self.catch_up))

    def __repr__(self) -> str:
        catch_up = f", catch_up={self.catch_up!r}" if self.catch_up != "none" else ""
        return f"Cron({self.expression!r}, tz={self.tz!r}{catch_up})"

    def __str__(self) -> str:
        catch_up = f", catch up {self.catch_up}" if self.catch_up != "none" else ""
        return f"cron {self.expression} ({self.tz}{catch_up})"


def check_schedule(schedule: object) -> None:
    """Check a ``schedule=`` option cheaply, at decoration time.

    :raises ConfigError: neither one of `INTERVALS` nor a `Cron`; the message lists them.
    """
    if schedule is None or isinstance(schedule, Cron) or schedule in INTERVALS:
        return
    raise ConfigError(
        f"schedule={schedule!r}: use one of {', '.join(repr(i) for i in INTERVALS)}, or"
        ' flyjobs.Cron("0 3 * * *", tz="Europe/Paris")'
    )


def check_alert_url(url: object, *, scheduled: bool) -> None:
    """Check an ``alert_url=`` option: an ``http://`` or ``https://`` URL with a host, of a
    scheduled function. The message never quotes the URL past its host: a webhook URL often
    holds a secret in its path or query.

    :raises ConfigError: naming what is wrong and the fix.
    """
    if url is None:
        return
    from urllib.parse import urlsplit  # lazy: keeps decoration light

    if not isinstance(url, str):
        raise ConfigError(f"alert_url= takes a URL string, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        scheme = parts.scheme if parts is not None and parts.scheme else "no scheme"
        raise ConfigError(
            f"alert_url= ({scheme}): give an http:// or https:// URL with a host, such as"
            " 'https://alerts.example.com/flyjobs'"
        )
    if any(c in url for c in "\0\r\n"):
        raise ConfigError("alert_url=: a URL cannot hold NUL or line breaks")
    if not scheduled:
        raise ConfigError(
            "alert_url= tells a scheduled function's failed and missed runs: pass schedule= too"
            " (a call's own failure is raised to its caller)"
        )


def redacted_url(url: str) -> str:
    """``url`` as shown in reprs and messages: its scheme and host, the rest cut
    (``https://hooks.example.com/…``)."""
    from urllib.parse import urlsplit  # lazy: keeps decoration light

    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}/…"
    except ValueError:
        return "…"


#: What each field of a cron expression takes, for the message of a bad one.
_FIELDS = (
    "the fields are minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC)"
    " and day of week (0-7 or SUN-SAT), each a value, a range a-b, a list a,b, a step */n or *"
)


def check_cron(cron: Cron) -> None:
    """Parse a cron expression and its time zone in full.

    :raises ConfigError: naming the bad field or the unknown time zone.
    """
    import datetime  # lazy: keeps decoration light
    import zoneinfo  # lazy: keeps decoration light

    from cronsim import CronSim, CronSimError  # lazy: keeps decoration light

    try:
        tz = zoneinfo.ZoneInfo(cron.tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{cron!r}: unknown time zone {cron.tz!r}; use an IANA name such as"
            " 'Europe/Paris' or 'UTC'"
        ) from None
    try:
        next(CronSim(cron.expression, datetime.datetime.now(tz)))
    except CronSimError as exc:
        raise ConfigError(f"{cron!r}: {exc}; {_FIELDS}") from None
    except StopIteration:
        raise ConfigError(f"{cron!r} never fires") from None


def schedule_spec(schedule: str | Cron) -> dict[str, Any]:
    """The schedule as the worker's payload carries it: ``{"every": "hourly"}`` or
    ``{"cron": "0 3 * * *", "tz": "Europe/Paris"}`` (with ``"catch_up": "latest"`` when set)."""
    if isinstance(schedule, Cron):
        # Only when set: the digests of functions deployed before it still match.
        catch_up = {"catch_up": schedule.catch_up} if schedule.catch_up != "none" else {}
        return {"cron": schedule.expression, "tz": schedule.tz, **catch_up}
    return {"every": schedule}


def cron_ticks(spec: dict[str, Any], after: float) -> Iterator[float]:
    """The ticks of a cron spec (`schedule_spec`) strictly after `after` (unix s), in order: a
    cron resident's next run on its machine, and the next run due in ``flyjobs schedule ls``."""
    import datetime  # lazy: keeps decoration light
    import zoneinfo  # lazy: keeps decoration light

    from cronsim import CronSim  # lazy: keeps decoration light

    tz = zoneinfo.ZoneInfo(spec.get("tz") or "UTC")
    for moment in CronSim(spec["cron"], datetime.datetime.fromtimestamp(after, tz)):
        yield moment.timestamp()


def describe(spec: dict[str, Any]) -> str:
    """A schedule spec as ``ls`` shows it: ``hourly`` or ``cron 0 3 * * * (Europe/Paris)``."""
    if "cron" in spec:
        catch_up = f", catch up {spec['catch_up']}" if spec.get("catch_up") else ""
        return f"cron {spec['cron']} ({spec.get('tz', 'UTC')}{catch_up})"
    return str(spec.get("every", "?"))
