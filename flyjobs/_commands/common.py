"""What the commands share: the API they talk to, and errors shown without a traceback."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import anyio
import click

from .._aio.sole_error import sole_error
from .._exceptions import ConfigError, FlyjobsError
from .._output.call_lines import shown
from .._results.local_api import app_result_key
from .._settings import Settings
from .._wire.seal import RESULT_KEY_ENV
from ..machines import MachinesClient

__all__ = ("APP_OPTION", "NO_API", "api_client", "result_key", "run_async", "shows_errors")

P = ParamSpec("P")
T = TypeVar("T")

NO_API = (
    "no Machines API is configured (FLY_API_TOKEN is unset): start `flyjobs dev` in another"
    " terminal and export the variables it prints, or set FLY_API_TOKEN (and FLY_APP) for Fly"
)

APP_OPTION = click.option(
    "-a", "--app", default=None, help="Fly app (default: FLY_APP or [tool.flyjobs] app)."
)


def shows_errors(command: Callable[P, T]) -> Callable[P, T]:
    """Show flyjobs' errors (bad settings, API refusals) as one clear line, exit code 1 (an
    exception group's too: `flyjobs._aio.sole_error`); what they quote of remote or stored text is
    escaped (`shown`)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            try:
                return command(*args, **kwargs)
            except BaseExceptionGroup as group:
                error = sole_error(group)
            raise error  # outside the handler: the group does not become its context
        except (FlyjobsError, LookupError) as exc:
            notes = "".join(f"\n  {note}" for note in getattr(exc, "__notes__", ()))
            raise click.ClickException(shown(f"{exc}{notes}", multiline=True)) from None

    return wrapper


def api_client(app: str | None) -> tuple[Settings, MachinesClient, str]:
    """The settings, a client of the Machines API they name, and the app to look at.

    :raises ConfigError: no API is configured (no token), or no app is named.
    """
    settings = Settings.load()
    if not settings.api_token:
        raise ConfigError(NO_API)
    app = app or settings.require("app")
    client = MachinesClient(token=settings.api_token, base_url=settings.api_hostname)
    return settings, client, app


async def result_key(settings: Settings, client: MachinesClient, app: str) -> str:
    """The app's result key (``FLYJOBS_RESULT_KEY``, or with ``flyjobs dev`` the app's secret
    read through its API, see `flyjobs._results.local_api`): scheduled machines are sealed with it.

    :raises ConfigError: it is not set (on Fly).
    """
    key = await app_result_key(settings, client, app)
    if key:
        return key
    raise ConfigError(
        f"{RESULT_KEY_ENV} is not set: schedule commands seal the machines they deploy with it,"
        " and touch no machine without that seal; export the value of the app's"
        f" {RESULT_KEY_ENV} secret (`fly secrets set {RESULT_KEY_ENV}=...` sets one)"
    )


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` to completion on a fresh event loop."""

    async def main() -> Any:
        return await fn()

    result: T = anyio.run(main)
    return result
