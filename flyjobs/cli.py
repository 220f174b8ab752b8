"""The ``flyjobs`` command line. Each command is a thin face over the library."""

from __future__ import annotations

import click

from . import __version__
from ._commands.batch import batch
from ._commands.code import code
from ._commands.doctor import doctor
from ._commands.listing import logs, ls
from ._commands.run import run
from ._commands.schedule import schedule
from ._commands.standby import standby
from ._commands.strays import gc
from .emulator import dev_command

__all__ = ("cli", "main")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flyjobs")
def cli() -> None:
    """Run Python functions on Fly.io Machines, one ephemeral machine per call.

    With FLY_API_TOKEN unset, remote calls run on an embedded local emulator of the Machines
    API; `flyjobs dev` runs that emulator on its own so other tools can talk to it.
    """


cli.add_command(dev_command, name="dev")
for _command in (run, ls, logs, gc, doctor, batch, schedule, code, standby):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``flyjobs`` console script."""
    cli()
