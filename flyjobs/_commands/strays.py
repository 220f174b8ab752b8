"""``flyjobs gc``: destroy stray flyjobs machines, and delete stale objects from the store."""

from __future__ import annotations

import click

from .._calls.fleet import Stray, collect_strays
from .._output.call_lines import shown
from .._results.store import ObjectInfo, Store, StoreConfig, collect_stale_objects
from .._standby.claim import recover_standbys
from .._standby.fleet import Standby
from .common import APP_OPTION, api_client, run_async, shows_errors

__all__ = ("gc",)


@click.command("gc")
@APP_OPTION
@click.option("--dry-run", is_flag=True, help="List the strays; destroy nothing.")
@shows_errors
def gc(app: str | None, dry_run: bool) -> None:
    """Destroy stray flyjobs machines: past their deadline, or whose client is gone; and,
    with an object store (FLYJOBS_STORE), delete call objects older than a week (results,
    spilled arguments, detached-call records that crashed clients left; batch journals stay).

    Strays are found by the metadata flyjobs puts on its machines; a machine without it (one
    flyjobs did not create) is never touched, nor is a scheduled one. A standby machine
    (`flyjobs standby`) left started or with a call's config by a caller that died (its lease
    expired) is stopped and reset instead, back to rest. A client counts as gone
    when it ran on this host and its process has ended; other hosts' machines are judged by
    their deadline alone.

    \b
    Example:
        flyjobs gc --dry-run
        flyjobs gc
    """
    settings, client, app = api_client(app)

    async def collect() -> tuple[list[Stray], list[tuple[Standby, str]]]:
        async with client:
            strays = await collect_strays(client, app, dry_run=dry_run)
            return strays, await recover_standbys(client, app, dry_run=dry_run)

    strays, standbys = run_async(collect)
    for standby, what in standbys:
        text = f"standby {standby.id} ({standby.shape}): {what}"
        click.echo(f"{'would reset' if dry_run else 'reset'} {shown(text, output=False)}")
    verb = "would destroy" if dry_run else "destroyed"
    for stray in strays:
        job = stray.machine
        # The machine's metadata (ids, function, client in the reason) is escaped.
        text = f"{job.id} ({job.call_id}, {job.function}): {stray.reason}"
        click.echo(f"{verb} {shown(text, output=False)}")
    if not strays:
        click.echo(f"no stray flyjobs machines in app {app!r}")
    config = StoreConfig.load(settings.store, embedded=settings.embedded)
    if config is None:
        return
    store = Store(config)
    stale: list[ObjectInfo] = run_async(lambda: collect_stale_objects(store, dry_run=dry_run))
    verb = "would delete" if dry_run else "deleted"
    for info in stale:
        click.echo(f"{verb} {config.url}/{shown(info.key, output=False)} ({info.size} bytes)")
    if not stale:
        click.echo(f"no stale flyjobs objects in {config.url}")
