"""``flyjobs dev``: run the emulator in the foreground until Ctrl-C or SIGTERM.

Its options are made from `EmulatorConfig`'s fields (names, defaults, help), so every knob
is there and none drifts from the config.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._config import EmulatorConfig
from ._server import serve

__all__ = ("dev",)

_SPECIAL = frozenset({"tokens", "image_commands", "port"})
_CLICK_TYPES: dict[object, Any] = {
    bool: bool,
    int: int,
    float: float,
    str: str,
    int | None: int,
    Path | None: click.Path(file_okay=False, path_type=Path),
}


def _parse_image_commands(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, list[str]]:
    commands: dict[str, list[str]] = {}
    for value in values:
        image, sep, argv = value.partition("=")
        try:
            parsed = json.loads(argv) if sep else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise click.BadParameter(f'{value!r}: use IMAGE=\'["python", "-m", "app"]\'')
        commands[image] = parsed
    return commands


def _config_options(command: Callable[..., None]) -> Callable[..., None]:
    for name, field in reversed(EmulatorConfig.model_fields.items()):
        if name in _SPECIAL:
            continue
        flag = "--" + name.replace("_", "-")
        kind = _CLICK_TYPES[field.annotation]
        if kind is bool:
            flag = f"{flag}/--no-{name.replace('_', '-')}"
        default = None if field.is_required() else field.get_default()
        command = click.option(
            flag, name, type=kind, default=default, show_default=default is not None,
            help=field.description,
        )(command)  # fmt: skip
    return command


@click.command("dev")
@click.option("--port", default=4280, show_default=True, help="TCP port; 0 picks a free one.")
@click.option(
    "--token",
    "tokens",
    multiple=True,
    help="Accepted bearer token (repeatable). Default: $FLY_API_TOKEN, else a generated one.",
)
@click.option(
    "--image-command",
    "image_commands",
    multiple=True,
    callback=_parse_image_commands,
    help="IMAGE=JSON-ARGV run for an image whose config names no command (repeatable).",
)
@_config_options
def dev(tokens: tuple[str, ...], **settings: Any) -> None:
    """Run the local Fly Machines API emulator until interrupted.

    Every machine is a local process; all of them are killed when the emulator stops.
    """
    accepted = list(tokens) or [os.environ.get("FLY_API_TOKEN") or secrets.token_urlsafe(24)]
    asyncio.run(_run(EmulatorConfig.model_validate({**settings, "tokens": accepted})))


async def _run(config: EmulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(config) as running:
        click.echo(f"flyjobs emulator listening on {running.url}")
        click.echo(f"export FLY_API_HOSTNAME={running.url} FLY_API_TOKEN={running.token}")
        await stop.wait()
        click.echo("flyjobs emulator stopping; killing its machines")
