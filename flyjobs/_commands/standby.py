"""``flyjobs standby create|ls|rm``: stopped machines made ahead of time for maps to claim."""

from __future__ import annotations

import json

import click

from .._declare.options import CallOptions
from .._exceptions import ConfigError
from .._output.call_lines import shown
from .._standby.fleet import Standby, create_standbys, list_standbys, remove_standbys
from .common import APP_OPTION, api_client, run_async, shows_errors
from .target import load_function

__all__ = ("standby",)


@click.group("standby")
def standby() -> None:
    """Standby machines: stopped machines a map claims and starts all at once.

    Fly limits machine creates to about one a second per app, but starts per machine: a map
    (or `[tool.flyjobs] standby = true`, or `fn.map(..., standby=True)`) that finds standbys
    of its shape starts them at once, under their lease, and creates machines only beyond
    them. When it ends they are stopped and reset, back to rest. A stopped standby costs its
    root filesystem (Fly: $0.15/GB per 30 days).
    """


@standby.command("create")
@APP_OPTION
@click.option("--count", type=click.IntRange(min=1), required=True, help="Machines to create.")
@click.option(
    "--function", "target", metavar="FILE_OR_MODULE::FUNCTION", default=None,
    help="Take the machine options (image, cpus, memory_mb, size, region) of this function.",
)  # fmt: skip
@click.option("--image", default=None, help="Image (default: FLYJOBS_IMAGE or the function's).")
@click.option("--cpus", type=int, default=None, help="vCPUs per machine (1, 2, 4, 8 or 16).")
@click.option("--memory-mb", type=int, default=None, help="Memory per machine in MB (x 256).")
@click.option("--size", default=None, help="A named Fly size (shared-cpu-2x...).")
@click.option("--region", default=None, help="Fly region code (default: Fly chooses).")
@shows_errors
def create(
    app: str | None,
    count: int,
    target: str | None,
    image: str | None,
    cpus: int | None,
    memory_mb: int | None,
    size: str | None,
    region: str | None,
) -> None:
    """Create COUNT standby machines, stopped (never booted), at the create rate.

    Their shape (cpus and memory, or size) and image must be those of the function a map
    runs, for the map to claim them: give the same options, or --function to take its own.

    \b
    Example:
        flyjobs standby create --count 64 --function jobs.py::resize
        flyjobs standby create --count 8 --cpus 2 --memory-mb 1024
    """
    settings, client, app = api_client(app)
    given = {
        k: v
        for k, v in {"cpus": cpus, "memory_mb": memory_mb, "size": size, "region": region}.items()
        if v is not None
    }
    if target is not None:
        if given:
            raise ConfigError(
                f"--function takes the machine options of {target}; give either it or"
                f" {', '.join('--' + k.replace('_', '-') for k in given)}, not both"
            )
        options = load_function(target).options
    else:
        options = CallOptions(**given)  # type: ignore[arg-type]
    options = options.merged(settings.defaults)
    image = image or options.image or settings.image
    if not image:
        raise ConfigError(
            "standby machines need an image: pass --image, set FLYJOBS_IMAGE or `image` under"
            " [tool.flyjobs], or --function naming a function with image="
        )

    async def make() -> list[str]:
        async with client:
            return await create_standbys(
                client, app, options, image=image, count=count, on_created=click.echo
            )

    made = run_async(make)
    click.echo(f"created {len(made)} standby machine(s) in app {app!r}", err=True)


@standby.command("ls")
@APP_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON array of standbys.")
@shows_errors
def ls(app: str | None, as_json: bool) -> None:
    """List the app's standby machines: state, shape, image, region, and who claims one.

    \b
    Example:
        flyjobs standby ls
        flyjobs standby ls --json | jq -r '.[] | select(.claimed_by == "") | .id'
    """
    _settings, client, app = api_client(app)

    async def fetch() -> list[Standby]:
        async with client:
            return await list_standbys(client, app)

    standbys = run_async(fetch)
    if as_json:
        click.echo(json.dumps([s.__dict__ for s in standbys], indent=2))
        return
    if not standbys:
        click.echo(f"no standby machines in app {app!r}")
        return
    rows = [("MACHINE", "STATE", "SHAPE", "REGION", "IMAGE", "CLAIMED BY")] + [
        (s.id, s.state, s.shape, s.region, s.image, s.claimed_by or "-") for s in standbys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo(shown(line.rstrip(), output=False))


@standby.command("rm")
@APP_OPTION
@click.argument("ids", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every standby at rest.")
@shows_errors
def rm(app: str | None, ids: tuple[str, ...], remove_all: bool) -> None:
    """Destroy standby machines by ID, or --all of them. One a map has claimed is left alone.

    \b
    Example:
        flyjobs standby rm 3d8d9e5b1e4e89
        flyjobs standby rm --all
    """
    if bool(ids) == remove_all:
        raise click.UsageError("give standby machine IDs, or --all (not both)")
    _settings, client, app = api_client(app)

    async def remove() -> list[tuple[str, str]]:
        async with client:
            return await remove_standbys(client, app, None if remove_all else ids)

    done = run_async(remove)
    for machine_id, what in done:
        click.echo(shown(f"{machine_id}: {what}", output=False))
    if not done:
        click.echo(f"no standby machines in app {app!r}")
