"""``flyjobs ls`` and ``flyjobs logs``: what runs, and what it printed."""

from __future__ import annotations

import json
import time

import click

from .._calls.fleet import JobMachine, list_jobs
from .._cost.prices import prices_for
from .._output.call_lines import shown
from .._output.logs import read_output
from .common import APP_OPTION, api_client, run_async, shows_errors

__all__ = ("logs", "ls")

_COLUMNS = ("MACHINE", "STATE", "POOL", "BATCH", "CALL", "FUNCTION", "REGION", "AGE", "COST")


def format_age(seconds: float | None) -> str:
    """``seconds`` as a short age: ``42s``, ``5m``, ``3h``, ``2d`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _age(job: JobMachine, now: float) -> str:
    return format_age(job.age_s(now))


@click.command("ls")
@APP_OPTION
@click.option("--all", "show_all", is_flag=True, help="Include recently destroyed machines.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of machines.")
@shows_errors
def ls(app: str | None, show_all: bool, as_json: bool) -> None:
    """List the app's flyjobs machines by pool, batch, function and state, with age, region and
    cost.

    Only machines flyjobs created (those carrying its metadata) are listed. COST is what a
    machine has cost in USD: its started seconds (from its own start and exit events; a
    running machine's so far) at its size's price in its region, from the price table
    (shipped, or yours with FLYJOBS_PRICES / [tool.flyjobs] prices).

    \b
    Example:
        flyjobs ls
        flyjobs ls --json | jq '.[] | select(.state == "started") | .id'
    """
    settings, client, app = api_client(app)
    prices = prices_for(settings.prices)

    async def fetch() -> list[JobMachine]:
        async with client:
            return await list_jobs(client, app, include_deleted=show_all, prices=prices)

    jobs = run_async(fetch)
    now = time.time()
    if as_json:
        click.echo(json.dumps([job.as_json(now) for job in jobs], indent=2))
        return
    if not jobs:
        click.echo(f"no flyjobs machines in app {shown(app, output=False)!r}")
        return
    jobs.sort(key=lambda j: (j.pool, j.batch_id, j.function, j.state, j.created_at or 0.0))
    # Every cell but the age is the machine's config or the API's answer: escaped.
    rows = [_COLUMNS] + [
        tuple(
            shown(cell, output=False)
            for cell in (
                j.id,
                j.state,
                j.pool or "-",
                j.batch_id or "-",
                j.call_id,
                j.function,
                j.region,
                _age(j, now),
                "-" if j.cost_usd is None else f"${j.cost_usd:.4f}",
            )
        )
        for j in jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


@click.command("logs")
@click.argument("ident", metavar="CALL_ID|BATCH_ID")
@APP_OPTION
@click.option(
    "-f", "--follow", is_flag=True,
    help="Keep printing until its machines stop (waiting up to a minute for the first).",
)  # fmt: skip
@shows_errors
def logs(ident: str, app: str | None, follow: bool) -> None:
    """Print the full output of a call or of a batch, read through Fly's logs API.

    A batch's lines (and a retried call's) are prefixed with the call id they came from: each
    input's, also where one machine ran many inputs (a batch's, a pool's). Lines the logs
    service no longer keeps are gone; the local emulator says where it dropped some.

    \b
    Example:
        flyjobs logs fj-1a2b3c4d5e6f7a8b
        flyjobs logs fjb-0a1b2c3d4e5f --follow
    """
    _settings, client, app = api_client(app)

    def emit(_job: JobMachine, call_id: str, line: str) -> None:
        # One call's own lines print as they are; any other line says which call it is from.
        line = shown(line)
        click.echo(line if call_id == ident else f"[{shown(call_id, output=False)}] {line}")

    def waiting() -> None:
        click.echo(f"waiting for a machine of {ident}…", err=True)

    async def read() -> None:
        async with client:
            await read_output(client, app, ident, emit, follow=follow, on_wait=waiting)

    run_async(read)
