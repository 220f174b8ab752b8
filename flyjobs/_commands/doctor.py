"""``flyjobs doctor``: check each setting, with the fix for each failure."""

from __future__ import annotations

import sys

import click

from .._output.call_lines import shown
from .._settings import Settings
from .checks import Check, diagnose
from .common import run_async, shows_errors

__all__ = ("doctor",)


@click.command("doctor")
@click.option(
    "--secret", "secrets", multiple=True, metavar="NAME",
    help="A secret the app must have (repeatable).",
)  # fmt: skip
@shows_errors
def doctor(secrets: tuple[str, ...]) -> None:
    """Check the settings remote calls need: token, app, image, secrets, results, rate limits.

    Prints one PASS or FAIL line per check, each failure with its fix; exits 1 if any failed.

    \b
    Example:
        flyjobs doctor
        flyjobs doctor --secret DATABASE_URL
    """
    settings = Settings.load()

    async def check() -> list[Check]:
        return await diagnose(settings, secrets=secrets)

    checks = run_async(check)
    where = f" (settings from {settings.source})" if settings.source else ""
    click.echo(f"flyjobs doctor{where}")
    for item in checks:
        # A detail quotes the API's answers (secret names, error bodies): escaped.
        detail = shown(item.detail, multiline=True)
        click.echo(f"{'PASS' if item.ok else 'FAIL'}  {item.name}: {detail}")
        if not item.ok and item.fix:
            click.echo(f"      fix: {shown(item.fix, multiline=True)}")
    if not all(item.ok for item in checks):
        sys.exit(1)
