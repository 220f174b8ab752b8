"""What deployed scheduled functions did: their runs, next tick, output; removing one.

Everything here reads the Machines API (and Fly's logs API) only, so it works with no client
having been up while the runs happened: each run's outcome is a record line its worker wrote
to the machine's log (`flyjobs._machine_side.scheduled_run`), and a run that died without writing
one shows up as an ``exit`` event of the machine.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._calls.dispatch import spawn_encoded
from .._calls.runtime import get_runtime
from .._code.bundle import Bundle
from .._cost.ledger import scheduled_costs
from .._cost.prices import PriceTable
from .._declare.options import CallOptions
from .._declare.schedule import cron_ticks
from .._exceptions import APIError, ConfigError, SerializationError, TransportError
from .._output.call_lines import shown
from .._wire.call_envelope import CallEnvelope, decode_call
from .._wire.log_lines import RUN_RECORD_PREFIX
from .._wire.machine import (
    DEFAULT_TIMEOUT_S,
    EXIT_BAD_PAYLOAD,
    EXIT_DEADLINE,
    EXIT_IMPORT_FAILED,
    SCHEDULE_INTERVALS_S,
)
from .._wire.seal import seal_code
from ..machines import Machine, MachinesClient
from .deploy import META_SPEC, _destroy, iter_refs, scheduled_machines
from .health import Health, assess, schedule_now, to_schedule_clock

__all__ = (
    "Run",
    "ScheduleStatus",
    "find",
    "machine_logs",
    "readable",
    "remove",
    "run_now",
    "statuses",
    "when",
)

#: Log lines (and pages of them) read for a machine's run records: the latest ones are kept.
_LOG_LINES = 20_000
_LOG_PAGES = 50
#: The statuses of a run that did not succeed.
_FAILED = frozenset({"failed", "timeout", "crashed"})
#: Exit codes after which the worker has written its own record of the run.
_RECORDED_EXITS = frozenset({0, EXIT_DEADLINE, EXIT_IMPORT_FAILED, EXIT_BAD_PAYLOAD})


@dataclass(frozen=True)
class Run:
    """One run (or skipped tick) of a scheduled function.

    :ivar started: unix time (s) it started, or the tick it skipped.
    :ivar tick: the schedule tick (unix s) it ran for, when the worker recorded it.
    :ivar status: ``ok``, ``failed``, ``timeout``, ``crashed`` or ``skipped``.
    :ivar duration_s: seconds it ran.
    :ivar error: ``Type: message`` of a failed run.
    :ivar traceback: the formatted remote traceback of a failed run (its last
        `flyjobs._wire.log_lines.ERROR_TRACEBACK_CHARS` characters), when the worker recorded it.
    :ivar reason: why a tick was skipped.
    """

    started: float
    status: str
    duration_s: float
    error: str = ""
    value: str = ""
    next_due: float | None = None
    tick: float | None = None
    traceback: str = ""
    reason: str = ""


@dataclass
class ScheduleStatus:
    """A deployed scheduled function as ``flyjobs schedule ls`` shows it.

    :ivar last_failure: its last run that did not succeed (among those its machine's logs
        still hold), with its traceback when recorded; None if none failed.
    :ivar health: its cadence, last run, late and missed ticks and consecutive failures
        (`flyjobs._schedules.health`); None when its machine carries no readable schedule.
    :ivar run_cost_usd: USD a run costs, from its machine's start and exit events (see
        `flyjobs._cost.ledger.scheduled_costs`); None before a run or without prices.
    :ivar month_cost_usd: USD per month (30 days) at its cadence.
    """

    name: str
    ref: str
    schedule: str
    machine_id: str
    state: str
    runs: list[Run] = field(default_factory=list)
    next_due: float | None = None
    last_failure: Run | None = None
    health: Health | None = None
    run_cost_usd: float | None = None
    month_cost_usd: float | None = None


def find(machines: list[Machine], name: str, *, app: str = "") -> tuple[str, Machine]:
    """The scheduled machine called ``name``: its qualname as ``ls`` prints it, or its
    ``module:qualname``.

    :param app: the app the machines are of, named in the error.
    :raises ConfigError: none matches (the deployed names are listed), or several do.
    """
    pairs = list(iter_refs(machines))
    matches = [(ref, m) for ref, m in pairs if name in (ref, ref.partition(":")[2])]
    refs = sorted({ref for ref, _ in matches})
    if len(refs) > 1:
        raise ConfigError(f"{name!r} names several scheduled functions: {', '.join(refs)}")
    if not matches:
        known = ", ".join(sorted({ref for ref, _ in pairs})) or "none"
        where = f" in app {app!r}" if app else ""
        raise ConfigError(
            f"no scheduled function {name!r}: it is not deployed{where} (deployed: {known};"
            " `flyjobs schedule deploy MODULE` deploys)"
        )
    return matches[0]


async def statuses(
    client: MachinesClient,
    app: str,
    key: str,
    *,
    runs: int = 5,
    now: float | None = None,
    grace_s: float | None = None,
    prices: PriceTable | None = None,
) -> list[ScheduleStatus]:
    """Every scheduled function of the app deployed by flyjobs (its machine sealed with the
    result key ``key``) with its last ``runs`` runs, oldest first, and its health at ``now``
    (unix s on the schedules' clock; default `flyjobs._schedules.health.schedule_now`) with a
    grace period of ``grace_s`` seconds (default: a tenth of its cadence, at least 60 s); with
    ``prices``, what a run and a month cost."""
    now = schedule_now() if now is None else now
    result = []
    for ref, machine in sorted(iter_refs(await scheduled_machines(client, app, key))):
        full = await client.get_machine(app, machine.id)
        history = _merge(await _records(client, app, machine.id), _crashes(full))
        done = [run for run in history if run.status not in ("pending", "running")]
        meta = (full.config.metadata or {}) if full.config else {}
        result.append(
            ScheduleStatus(
                name=ref.partition(":")[2],
                ref=ref,
                schedule=meta.get(META_SPEC, "?"),
                machine_id=machine.id,
                state=full.state or "?",
                runs=done[-runs:] if runs > 0 else [],
                next_due=_next_due(full, history),
                last_failure=next((r for r in reversed(done) if r.status in _FAILED), None),
                health=_health(full, history, now, grace_s),
            )
        )
        if prices is not None:
            result[-1].run_cost_usd, result[-1].month_cost_usd = scheduled_costs(
                full, prices, runs_per_month=_runs_per_month(full)
            )
    return result


def _runs_per_month(machine: Machine) -> float | None:
    """Runs in 30 days at the machine's Fly schedule (hourly, daily...); None for a cron
    resident, which stays started all month and runs its ticks itself."""
    config = machine.config
    interval = SCHEDULE_INTERVALS_S.get(config.schedule or "") if config else None
    if interval:
        return 30 * 86400.0 / interval
    return None


def _health(
    machine: Machine, history: list[Run], now: float, grace_s: float | None
) -> Health | None:
    call = _payload(machine)
    if call is None or not call.schedule:
        return None
    created = machine.created_at.timestamp() if machine.created_at else time.time()
    # A Fly-scheduled machine is started only while it runs; a cron resident always is.
    running = "cron" not in call.schedule and machine.state in ("starting", "started")
    return assess(
        call.schedule,
        history,
        now=now,
        since=to_schedule_clock(created),
        running=running,
        grace_s=grace_s,
    )


async def machine_logs(
    client: MachinesClient, app: str, key: str, name: str, *, lines: int = 200
) -> tuple[str, list[str]]:
    """(``module:qualname``, the machine's last ``lines`` log lines as `readable` shows
    them, then the traceback of the last failed run among them) of the scheduled function."""
    ref, machine = find(await scheduled_machines(client, app, key), name)
    return ref, readable(await client.log_tail(app, machine.id, lines=lines))


def when(at: float | None) -> str:
    """Unix time ``at`` as ISO 8601 in this host's local time zone, to the second, with its
    offset (``2026-12-06 09:30:00+01:00``); ``-`` for None."""
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at).astimezone().isoformat(sep=" ", timespec="seconds")


def readable(text: str) -> list[str]:
    """A scheduled machine's log lines as ``flyjobs schedule logs`` shows them: each run
    record as one line (local time, status, duration, error or value), the skips and next tick
    of a resident too; every other line as it is, escaped (`flyjobs._output.call_lines.shown`); then
    the traceback of the last failed run, if the worker recorded one."""
    out: list[str] = []
    last_failed: Run | None = None
    for line in text.splitlines():
        run = _parse_record(line)
        if run is None:
            out.append(shown(line))
            continue
        if run.status == "pending":
            out.append(f"{when(run.started)}  next run due")
        elif run.status == "running":
            out.append(f"{when(run.started)}  running")
        elif run.status in ("skipped", "missed"):
            status = f"{run.status:8}"
            out.append(f"{when(run.started)}  {status}  {shown(run.reason, output=False)}")
        else:
            detail = run.error or (f"-> {run.value}" if run.value else "")
            out.append(
                f"{when(run.started)}  {shown(run.status, output=False):8}  "
                f"{run.duration_s:.2f}s  {shown(detail, output=False)}"
            )
        if run.traceback:
            last_failed = run
    if last_failed is not None:
        out.append("")
        out.append(f"Traceback of the last failed run ({when(last_failed.started)}):")
        out.extend(shown(line, output=False) for line in last_failed.traceback.splitlines())
    return out


async def remove(client: MachinesClient, app: str, key: str, name: str) -> tuple[str, str]:
    """Destroy the machine of one scheduled function (one flyjobs deployed: sealed with the
    result key ``key``); return (``module:qualname``, its id)."""
    ref, machine = find(await scheduled_machines(client, app, key), name)
    await _destroy(client, app, key, machine.id, lambda _: None)
    return ref, machine.id


async def _records(client: MachinesClient, app: str, machine_id: str) -> list[Run]:
    try:
        text = await client.log_tail(app, machine_id, lines=_LOG_LINES, max_pages=_LOG_PAGES)
    except (APIError, TransportError):
        return []  # logs unavailable: the exit events still tell what failed
    return [run for message in text.splitlines() if (run := _parse_record(message)) is not None]


def _parse_record(message: str) -> Run | None:
    """The run a record line of the log tells (`flyjobs._machine_side.scheduled_run`), or None."""
    if not message.startswith(RUN_RECORD_PREFIX):
        return None
    try:
        record = json.loads(message[len(RUN_RECORD_PREFIX) :])
        error = record.get("error") or {}
        return Run(
            started=float(record["started"]),
            status=str(record["status"]),
            duration_s=float(record.get("duration_s") or 0.0),
            error=f"{error['type']}: {error['message']}" if error else "",
            value=str(record.get("value") or ""),
            next_due=record.get("next_due"),
            tick=record.get("tick"),
            traceback=str(error.get("traceback") or "") if error else "",
            reason=str(record.get("reason") or ""),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a line that only looks like a record


def _crashes(machine: Machine) -> list[Run]:
    """Runs that ended without a record: machine exits with a crash's code, or out of memory."""
    runs = []
    for event in machine.events:
        exit_event = event.exit_event
        if event.type != "exit" or exit_event is None or exit_event.requested_stop:
            continue
        if exit_event.exit_code in _RECORDED_EXITS and not exit_event.oom_killed:
            continue
        why = "out of memory" if exit_event.oom_killed else f"exit code {exit_event.exit_code}"
        runs.append(
            Run(
                # On the schedules' clock, as the records' times are (a scaled emulator's).
                started=to_schedule_clock(event.timestamp / 1000),
                status="crashed",
                duration_s=0.0,
                error=f"MachineCrashedError: the machine ended ({why}) without a result",
            )
        )
    return runs


def _merge(records: list[Run], crashes: list[Run]) -> list[Run]:
    # A stable sort: records of one machine are already in the order they were written.
    return sorted([*records, *crashes], key=lambda run: run.started)


def _next_due(machine: Machine, history: list[Run]) -> float | None:
    for run in reversed(history):
        if run.next_due is not None:
            return float(run.next_due)
    config = machine.config
    interval = SCHEDULE_INTERVALS_S.get(config.schedule or "") if config else None
    if interval and machine.created_at is not None:
        # Fly counts intervals from creation.
        created = machine.created_at.timestamp()
        return created + interval * (int((time.time() - created) // interval) + 1)
    spec = _cron_spec(machine)
    if spec is not None:
        return next(cron_ticks(spec, time.time()), None)
    return None


def _cron_spec(machine: Machine) -> dict[str, Any] | None:
    call = _payload(machine)
    spec = call.schedule if call is not None else None
    return spec if spec and "cron" in spec else None


def _payload(machine: Machine) -> CallEnvelope | None:
    """The scheduled payload the machine's config carries, if readable."""
    for file in (machine.config.files or []) if machine.config else []:
        if file.raw_value:
            try:
                return decode_call(base64.b64decode(file.raw_value))
            except (binascii.Error, ValueError, SerializationError):
                return None
    return None


def run_now(name: str, app: str | None = None) -> tuple[str, Any]:
    """Run a deployed scheduled function of ``app`` (default: the settings' app) once, now, on
    an ephemeral machine (the path of ``fn.remote()``, with the deployed arguments and
    options); return (``module:qualname``, its value).

    :raises ConfigError: no such scheduled function, or its machine carries no payload.
    :raises RemoteError: the function raised (as with ``fn.remote()``).
    """
    runtime = get_runtime()
    if app is None:
        app = runtime.settings.require("app") if runtime.app is None else runtime.app
    key = runtime.result_key
    if key is None:
        runtime.settings.check_fly(app=app, image=None)
        raise AssertionError("unreachable: check_fly raises without a result key")
    machines = runtime.call(scheduled_machines, runtime.client, app, key)
    ref, machine = find(machines, name)
    call = _payload(machine)
    if call is None or call.schedule is None or machine.config is None:
        raise ConfigError(f"machine {machine.id} of {ref} carries no scheduled payload; redeploy")
    config = machine.config
    guest = config.guest
    options = CallOptions(
        image=config.image,
        app=app,
        cpus=guest.cpus if guest else None,
        memory_mb=guest.memory_mb if guest else None,
        region=machine.region,
        env=config.env,
        timeout_s=float(call.schedule.get("timeout_s") or DEFAULT_TIMEOUT_S),
        retries=int(call.schedule.get("retries") or 0),
        pickle=call.pickle,
    )
    bundle = _deployed_bundle(machine, call, key)
    return ref, spawn_encoded(
        call.fn, call.sys_path, call.arguments_data, options, code=bundle
    ).result()


def _deployed_bundle(machine: Machine, call: CallEnvelope, key: str) -> Bundle | None:
    """The code bundle the deployed machine's config carries for its function, checked as its
    worker checks it (seal under the result key, sha256) before it is sent anywhere.

    :raises ConfigError: the bundle is missing, not sealed by the result key, or not the one
        its hash names: someone changed the machine's config; deploy again.
    """
    code = call.code
    if code is None:
        return None
    import hashlib  # lazy: only `schedule run` of a function with a bundle needs it
    import hmac  # lazy: as above

    files = (machine.config.files or []) if machine.config else []
    raw = next((f.raw_value for f in files if f.guest_path == code["path"]), None)
    try:
        data = base64.b64decode(raw or "", validate=True)
    except binascii.Error:
        data = b""
    sealed = hmac.compare_digest(code["seal"], seal_code(key, code["sha256"], call.call_id))
    if not sealed or hashlib.sha256(data).hexdigest() != code["sha256"]:
        raise ConfigError(
            f"machine {machine.id}: its code bundle is missing or not the one deployed (its"
            " seal or hash does not match), so its config was changed after the deploy; run"
            " `flyjobs schedule deploy` again"
        )
    return Bundle(data=data, sha256=code["sha256"], sources=(), root=Path())
