"""``flyjobs dev``: run the emulator in the foreground until Ctrl-C or SIGTERM.

Its options are made from `EmulatorConfig`'s fields (names, defaults, help), so every knob
is there and none drifts from the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ._config import EmulatorConfig
from ._server import serve
from ._tokens import TOKEN_ENV, TokenSource, default_token_file, resolve_token

__all__ = ("dev",)

_SPECIAL = frozenset(
    {"tokens", "image_commands", "port", "pass_env", "apps", "regions", "failing_images"}
)
_CLICK_TYPES: dict[object, Any] = {
    bool: bool,
    int: int,
    float: float,
    str: str,
    int | None: int,
    float | None: float,
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


def _check_app_names(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    for value in values:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
            raise click.BadParameter(f"{value!r}: use lowercase letters, digits and dashes")
    return values


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


def _list_option(flag: str, field: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A repeatable ``flag`` for the list ``field`` of `EmulatorConfig`, helped by its
    description."""
    described = EmulatorConfig.model_fields[field].description or ""
    return click.option(flag, field, multiple=True, help=described + " Repeatable.")


@click.command("dev")
@click.option("--port", default=4280, show_default=True, help="TCP port; 0 picks a free one.")
@click.option(
    "--token",
    "tokens",
    multiple=True,
    help="Accepted bearer token (repeatable). Visible to every user in `ps`: prefer "
    f"${TOKEN_ENV} or --token-file.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the accepted token; it must be private (chmod 600). Used when neither "
    f"--token nor ${TOKEN_ENV} is given, and created with a new random token if missing. "
    f"[default: {default_token_file()}]",
)
@_list_option("--pass-env", "pass_env")
@click.option(
    "--region",
    "regions",
    multiple=True,
    help="Region machines may be created in, besides --default-region (repeatable; default: "
    "Fly's regions).",
)
@click.option(
    "--image-command",
    "image_commands",
    multiple=True,
    callback=_parse_image_commands,
    help="IMAGE=JSON-ARGV run for an image whose config names no command (repeatable).",
)
@_list_option("--failing-image", "failing_images")
@click.option(
    "--app",
    "apps",
    multiple=True,
    callback=_check_app_names,
    help="Create this app at start (repeatable); the first is printed as FLY_APP.",
)
@_config_options
def dev(
    tokens: tuple[str, ...],
    token_file: Path | None,
    pass_env: tuple[str, ...],
    apps: tuple[str, ...],
    regions: tuple[str, ...],
    failing_images: tuple[str, ...],
    **settings: Any,
) -> None:
    """Run the local Fly Machines API emulator until interrupted.

    Every machine is a local process; all of them are killed when the emulator stops. Machines
    are processes of your user: they are not isolated from each other or from you, and get
    only an allowlisted part of your environment (see --pass-env).

    The accepted token comes from --token, else $FLYJOBS_DEV_TOKEN, else a private token file
    (--token-file), created with a random token on first use. $FLY_API_TOKEN is never used:
    your real Fly token stays out of the emulator. The full token is never printed.

    \b
    Example:
        flyjobs dev --app my-app --ui
        flyjobs dev --port 0 --time-scale 3600 --rate-limits
        flyjobs dev --failing-image registry.fly.io/my-app:bad --keep-failed
    """
    token_file = token_file or default_token_file()
    try:
        source = resolve_token(tokens, os.environ.get(TOKEN_ENV), token_file)
    except OSError as exc:
        raise click.UsageError(
            f"cannot use the token file {token_file}: {exc.strerror or exc}; pass --token-file"
            " with a path you can write, or set $" + TOKEN_ENV
        ) from None
    try:
        config = EmulatorConfig.model_validate(
            {
                **settings,
                "tokens": source.tokens,
                "pass_env": list(pass_env),
                "apps": list(apps),
                "failing_images": list(failing_images),
                **({"regions": list(regions)} if regions else {}),
            }
        )
    except ValidationError as exc:
        raise _bad_option(exc) from None
    if config.time_scale != 1 and config.time_origin is None:
        # Fixed here so that the export line can give the schedule commands the same clock.
        config = config.model_copy(update={"time_origin": time.time()})
    asyncio.run(_run(config, source))


def _bad_option(exc: ValidationError) -> click.BadParameter:
    """The first invalid option of a `ValidationError` of `EmulatorConfig`, as click shows
    a bad option: ``Invalid value for '--port': 70000: it should be less than or equal to
    65535``."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    message = str(error["msg"]).replace("Input should", "it should", 1)
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f"{value!r}: "
    return click.BadParameter(f"{shown}{message}", param_hint=f"'--{name.replace('_', '-')}'")


def _start_failure(config: EmulatorConfig, exc: OSError) -> str:
    """What went wrong when the emulator could not start, and what to change."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"cannot use {exc.filename}: {reason}; pass --data-dir with a folder you can write"
    return (
        f"cannot listen on {config.host}:{config.port}: {reason}; pass another --port (0 picks"
        " a free one) or a local --host"
    )


async def _run(config: EmulatorConfig, source: TokenSource) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        try:
            running = await stack.enter_async_context(serve(config))
        except OSError as exc:
            raise click.ClickException(_start_failure(config, exc)) from None
        click.echo(f"flyjobs emulator listening on {running.url}")
        app = f" FLY_APP={config.apps[0]}" if config.apps else ""
        clock = (
            f" FLYJOBS_TIME_SCALE={config.time_scale!r} FLYJOBS_TIME_ORIGIN={config.time_origin!r}"
            if config.time_scale != 1
            else ""
        )
        click.echo(
            f"export FLY_API_HOSTNAME={running.url} FLY_API_TOKEN={source.shell_value}{app}{clock}"
        )
        if running.ui_url:
            click.echo(f"dashboard: {running.ui_url}")
        if source.note:
            click.echo(source.note, err=True)
        await stop.wait()
        click.echo("flyjobs emulator stopping; killing its machines")
