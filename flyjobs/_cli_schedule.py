"""``flyjobs schedule …``: deploy, list, run, read and remove scheduled functions.

A thin face over `flyjobs._schedule_deploy` and `flyjobs._schedule_status`. Settings (app,
token, API host, image) are read as for every call; the commands need a Machines API that
outlives them: Fly (``FLY_API_TOKEN``) or ``flyjobs dev`` (``FLY_API_HOSTNAME`` and its token).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click

from ._exceptions import ConfigError, FlyjobsError
from ._settings import Settings
from .machines import MachinesClient

__all__ = ("schedule",)

T = TypeVar("T")


def _settings() -> Settings:
    settings = Settings.load()
    if settings.embedded:
        raise ConfigError(
            "scheduled functions need a Machines API that stays up: set FLY_API_TOKEN (and"
            " FLY_APP) for Fly, or run `flyjobs dev` and export the FLY_API_HOSTNAME and"
            " FLY_API_TOKEN it prints"
        )
    return settings


def _with_client(fn: Callable[[MachinesClient, Settings], Awaitable[T]]) -> T:
    """Run ``fn`` with a client of the configured API; errors become a one-line message."""
    try:
        settings = _settings()
        assert settings.api_token is not None

        async def main() -> T:
            async with MachinesClient(
                base_url=settings.api_hostname, token=settings.api_token
            ) as client:
                return await fn(client, settings)

        return anyio.run(main)
    except FlyjobsError as exc:
        raise click.ClickException(str(exc)) from None


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group("schedule")
def schedule() -> None:
    """Deploy and watch functions decorated with @flyjobs.remote(schedule=...)."""


@schedule.command("deploy")
@click.argument("target", metavar="MODULE_OR_FILE")
@click.option("--prune", is_flag=True, help="Destroy machines of functions gone from the module.")
def deploy(target: str, prune: bool) -> None:
    """Create or update one machine per scheduled function of MODULE_OR_FILE (idempotent)."""
    from ._schedule_deploy import deploy as deploy_module
    from ._schedule_deploy import load_target

    async def run(client: MachinesClient, settings: Settings) -> Any:
        app = settings.require("app")
        image = settings.require("image")
        module = load_target(target)
        return await deploy_module(client, app, image, module, prune=prune, say=click.echo)

    report = _with_client(run)
    for outcome in ("created", "updated", "unchanged", "pruned"):
        for name in getattr(report, outcome):
            click.echo(f"{outcome:10} {name}")
    stale = [name for name in report.stale if name not in report.pruned]
    for name in stale:
        click.echo(f"{'stale':10} {name} (gone from {target}; --prune removes it)")
    if not any(dataclasses.asdict(report).values()):
        click.echo(f"no scheduled functions in {target}")


@schedule.command("ls")
@click.option("--runs", default=5, show_default=True, help="Last runs shown per function.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per function.")
def ls(runs: int, as_json: bool) -> None:
    """Each deployed scheduled function: schedule, machine, last runs, next run due."""
    from ._schedule_status import statuses

    async def run(client: MachinesClient, settings: Settings) -> Any:
        return await statuses(client, settings.require("app"), runs=runs)

    for status in _with_client(run):
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(status)))
            continue
        click.echo(
            f"{status.name}  ({status.ref})  {status.schedule}  machine {status.machine_id}"
            f" {status.state}  next due {_when(status.next_due)}"
        )
        for r in reversed(status.runs):
            detail = r.error or (f"-> {r.value}" if r.value else "")
            click.echo(f"  {_when(r.started)}  {r.status:8} {r.duration_s:8.2f}s  {detail}")


@schedule.command("rm")
@click.argument("name")
def rm(name: str) -> None:
    """Remove one scheduled function's machine (NAME as `ls` prints it, or module:qualname)."""
    from ._schedule_status import remove

    async def run(client: MachinesClient, settings: Settings) -> Any:
        return await remove(client, settings.require("app"), name)

    ref, machine_id = _with_client(run)
    click.echo(f"removed {ref} (machine {machine_id})")


@schedule.command("logs")
@click.argument("name")
def logs(name: str) -> None:
    """Show the latest output of a scheduled function's runs."""
    from ._schedule_status import machine_logs

    async def run(client: MachinesClient, settings: Settings) -> Any:
        return await machine_logs(client, settings.require("app"), name)

    _ref, text = _with_client(run)
    if text:
        click.echo(text)


@schedule.command("run")
@click.argument("name")
def run_(name: str) -> None:
    """Run a scheduled function once now, on an ephemeral machine; print its result."""
    from ._schedule_status import run_now

    try:
        _settings()
        _ref, value = run_now(name)
    except Exception as exc:  # the function's own exception too: shown, without a traceback
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    click.echo(repr(value))
