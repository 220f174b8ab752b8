"""``flyjobs schedule …``: deploy, list, run, read and remove scheduled functions.

Thin faces over `flyjobs._schedules.deploy` and `flyjobs._schedules.status`. Settings (app,
token, API host, image) are read as for every call; the commands need a Machines API that
outlives them: Fly (``FLY_API_TOKEN``) or ``flyjobs dev`` (``FLY_API_HOSTNAME`` and its token).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from .._cost.prices import prices_for
from .._output.call_lines import shown
from .._schedules.deploy import deploy as deploy_module
from .._schedules.deploy import scheduled_machines
from .._schedules.health import Health
from .._schedules.status import find, machine_logs, remove, run_now, statuses, when
from .._settings import Settings
from .common import APP_OPTION, NO_API, api_client, result_key, run_async, shows_errors
from .target import import_target

__all__ = ("schedule",)


@click.group("schedule")
def schedule() -> None:
    """Deploy and watch functions decorated with @flyjobs.remote(schedule=...)."""


@schedule.command("deploy")
@click.argument("target", metavar="MODULE_OR_FILE")
@click.option("--prune", is_flag=True, help="Destroy machines of functions gone from the module.")
@APP_OPTION
@shows_errors
def deploy(target: str, prune: bool, app: str | None) -> None:
    """Create or update one machine per scheduled function of MODULE_OR_FILE (idempotent).

    An unchanged function is left alone; a changed one is updated in place under the machine's
    lease. Functions gone from the module are reported, and destroyed with --prune. Code runs
    from the image (FLYJOBS_IMAGE): push the new image first.

    \b
    Example:
        flyjobs schedule deploy examples/scheduled.py
        flyjobs schedule deploy myapp.jobs --prune
    """
    settings, client, app = api_client(app)
    image = settings.require("image")
    module = import_target(target)

    async def run() -> Any:
        async with client:
            key = await result_key(settings, client, app)
            return await deploy_module(
                client,
                app,
                image,
                module,
                key=key,
                prune=prune,
                defaults=settings.defaults,
                say=say,
            )

    def say(line: str) -> None:
        click.echo(shown(line, output=False))

    report = run_async(run)
    for outcome in ("created", "updated", "unchanged", "pruned"):
        for name in getattr(report, outcome):
            click.echo(f"{outcome:10} {shown(name, output=False)}")
    stale = [name for name in report.stale if name not in report.pruned]
    for name in stale:
        # The name of a machine's function is its metadata: escaped.
        click.echo(
            f"{'stale':10} {shown(name, output=False)} (gone from {target}; --prune removes it)"
        )
    if not any(dataclasses.asdict(report).values()):
        click.echo(f"no scheduled functions in {target}")


#: ``--grace`` of ``ls`` and ``check``.
GRACE_OPTION = click.option(
    "--grace",
    "grace_s",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Seconds a tick may go unrun before it is late [default: a tenth of the cadence, at"
    " least 60].",
)


@schedule.command("ls")
@click.option(
    "--runs",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Last runs shown per function.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per function.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Show the traceback of each function's last failure."
)
@GRACE_OPTION
@APP_OPTION
@shows_errors
def ls(runs: int, as_json: bool, verbose: bool, grace_s: float | None, app: str | None) -> None:
    """Each deployed scheduled function: schedule, machine, last runs, next run due, and its
    health: expected cadence, last run, late and missed ticks, consecutive failures (see
    `flyjobs schedule check --help` for what late and missed mean), and what a run and a
    month (30 days, at its cadence) cost in USD, from its machine's own start and exit events
    at its size's price (the price table: shipped, or FLYJOBS_PRICES).

    Times are this host's local time. With -v, each function's last failed run follows, with
    its remote traceback.

    \b
    Example:
        flyjobs schedule ls
        flyjobs schedule ls -v
        flyjobs schedule ls --runs 20 --json
    """
    settings, client, app = api_client(app)
    prices = prices_for(settings.prices)

    async def run() -> Any:
        async with client:
            key = await result_key(settings, client, app)
            return await statuses(client, app, key, runs=runs, grace_s=grace_s, prices=prices)

    for status in run_async(run):
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(status)))
            continue
        # Everything but the times is the machine's config or its log: escaped.
        head = (
            f"{status.name}  ({status.ref})  {status.schedule}  machine {status.machine_id}"
            f" {status.state}"
        )
        click.echo(f"{shown(head, output=False)}  next due {when(status.next_due)}")
        if status.health is not None:
            click.echo(f"  {health_line(status.health)}")
        if status.run_cost_usd is not None and status.month_cost_usd is not None:
            click.echo(
                f"  cost ${status.run_cost_usd:.6f} per run, ${status.month_cost_usd:.4f} per"
                " month at this cadence"
            )
        for r in reversed(status.runs):
            detail = shown(r.error or (f"-> {r.value}" if r.value else r.reason), output=False)
            status_ = shown(r.status, output=False)
            click.echo(f"  {when(r.started)}  {status_:8} {r.duration_s:8.2f}s  {detail}")
        failure = status.last_failure
        if verbose and failure is not None:
            click.echo(f"  last failure, {when(failure.started)}:")
            trace = failure.traceback or failure.error
            for line in trace.splitlines():
                click.echo(f"    {shown(line, output=False)}")


def health_line(health: Health) -> str:
    """One line of a schedule's health: cadence, last run, then what is wrong or ``healthy``."""
    last = f"{when(health.last_run)} {health.last_status}" if health.last_run else "none yet"
    verdict = "; ".join(health.problems(when)) or "healthy"
    return shown(f"every: {health.cadence}  last run: {last}  {verdict}", output=False)


@schedule.command("check")
@GRACE_OPTION
@APP_OPTION
@shows_errors
def check(grace_s: float | None, app: str | None) -> None:
    """Exit 1 naming each scheduled function that is late, missed a tick or is failing;
    print "all N schedules healthy" and exit 0 otherwise. For a cron job or CI.

    \b
    A tick is LATE when it fell due more than the grace period ago and no run
    started for it (nor was it recorded as skipped): the run may still come.
    The grace period is a tenth of the cadence, at least 60 s (--grace sets it).
    A tick is MISSED when it passed without a run and the schedule moved on (a
    later tick was recorded, or the one after it is due too), or when a cron
    resident that was down recorded it as missed on its return.
    FAILING is one or more runs in a row that did not succeed (failed, timed out,
    crashed). Only what happened since a function's last successful run counts.
    Under `flyjobs dev --time-scale`, export the FLYJOBS_TIME_SCALE and
    FLYJOBS_TIME_ORIGIN it prints, so that "now" is its machines' clock.
    A check that cannot run (no API, bad settings) exits 1 too, with the reason.

    \b
    Example:
        flyjobs schedule check || notify-ops "a schedule needs a look"
        flyjobs schedule check --grace 600
    """
    settings, client, app = api_client(app)

    async def run() -> Any:
        async with client:
            key = await result_key(settings, client, app)
            return await statuses(client, app, key, runs=0, grace_s=grace_s)

    found = run_async(run)
    bad = [s for s in found if s.health is not None and not s.health.healthy]
    for status in bad:
        assert status.health is not None
        problems = "; ".join(status.health.problems(when))
        click.echo(shown(f"{status.name} ({status.ref}): {problems}", output=False))
    if bad:
        raise SystemExit(1)
    noun = "schedule" if len(found) == 1 else "schedules"
    click.echo(f"all {len(found)} {noun} healthy")


@schedule.command("rm")
@click.argument("name")
@APP_OPTION
@shows_errors
def rm(name: str, app: str | None) -> None:
    """Remove one scheduled function's machine (NAME as `ls` prints it, or module:qualname).

    \b
    Example:
        flyjobs schedule rm hourly_sync
        flyjobs schedule rm scheduled:hourly_sync
    """
    settings, client, app = api_client(app)

    async def run() -> Any:
        async with client:
            return await remove(client, app, await result_key(settings, client, app), name)

    ref, machine_id = run_async(run)
    click.echo(shown(f"removed {ref} (machine {machine_id})", output=False))


@schedule.command("logs")
@click.argument("name")
@click.option(
    "-n",
    "--lines",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Last lines shown.",
)
@APP_OPTION
@shows_errors
def logs(name: str, lines: int, app: str | None) -> None:
    """Show the latest output of a scheduled function's runs.

    Each run's record is one line (local time, status, duration, error or value); the
    traceback of the last failed run among them comes last.

    \b
    Example:
        flyjobs schedule logs hourly_sync
        flyjobs schedule logs hourly_sync -n 50
    """
    settings, client, app = api_client(app)

    async def run() -> Any:
        async with client:
            key = await result_key(settings, client, app)
            return await machine_logs(client, app, key, name, lines=lines)

    _ref, shown_lines = run_async(run)
    if shown_lines:
        click.echo("\n".join(shown_lines))


@schedule.command("run")
@click.argument("name")
@APP_OPTION
def run_(name: str, app: str | None) -> None:
    """Run a scheduled function once now, on an ephemeral machine; print its result.

    NAME is a deployed function, as `flyjobs schedule ls` prints it, or module:qualname.

    \b
    Example:
        flyjobs schedule run nightly_report
    """

    if Settings.load().embedded:
        raise click.ClickException(NO_API)

    @shows_errors
    def look_up() -> str:
        # Before any setting a run needs (an inbox, a store): a name not deployed says so.
        settings, client, app_name = api_client(app)

        async def run() -> Any:
            async with client:
                key = await result_key(settings, client, app_name)
                return find(await scheduled_machines(client, app_name, key), name, app=app_name)

        run_async(run)
        return app_name

    app = look_up()
    try:
        _ref, value = run_now(name, app)
    except click.ClickException:
        raise
    except Exception as exc:  # the function's own exception too: with its remote traceback
        trace = getattr(exc, "remote_traceback", "")
        message = f"{type(exc).__name__}: {exc}" + (
            f"\n\nRemote traceback:\n{trace.rstrip()}" if trace else ""
        )
        raise click.ClickException(shown(message, multiline=True)) from None
    click.echo(repr(value))
