"""``flyjobs run``: call a function remotely and print its result."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import click

from .._batches.map import results, start_map
from .._exceptions import FlyjobsError
from .._output.call_lines import shown
from .common import shows_errors
from .target import load_function, parse_argument, read_inputs

__all__ = ("run",)


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("target", metavar="FILE_OR_MODULE::FUNCTION")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--map", "map_file", type=click.Path(dir_okay=False, path_type=Path),
    help="Run one call per line of this JSON-lines file (array: positional arguments,"
    " object: keyword arguments, other: the one argument); print one result per line.",
)  # fmt: skip
@shows_errors
def run(target: str, args: tuple[str, ...], map_file: Path | None) -> None:
    """Call a function on a machine and print its result as JSON.

    Each ARG is a JSON value (`3`, `'[1, 2]'`, `'"text"'`), or else taken as a string. The
    function runs where any remote call runs: on Fly with FLY_API_TOKEN set, on the embedded
    emulator without it.

    \b
    Example:
        flyjobs run examples/hello.py::square 7
        flyjobs run myapp.jobs::resize --map inputs.jsonl
    """
    fn = load_function(target)
    try:
        if map_file is None:
            click.echo(_show(fn.remote(*(parse_argument(a) for a in args))))
            return
        if args:
            raise click.UsageError("give either ARGS or --map FILE, not both")
        # Read whole first: a malformed line is reported before any machine is created.
        inputs = list(read_inputs(map_file))
        mapped = start_map(
            inspect.unwrap(fn),
            fn.options,
            inputs,
            max_machines=None,
            reuse=True,
            max_failures=None,
            progress=None,
            order_outputs=True,
            return_exceptions=False,
            total_hint=len(inputs),
        )
        with results(mapped, return_exceptions=False) as values:
            for value in values:
                click.echo(_show(value))
    except (FlyjobsError, click.ClickException):
        raise
    except Exception as exc:
        # The function's own exception, rebuilt here: its remote traceback is what helps.
        trace = getattr(exc, "remote_traceback", "")
        message = f"{target} raised {type(exc).__name__}: {exc}" + (
            f"\n\nRemote traceback:\n{trace.rstrip()}" if trace else ""
        )
        raise click.ClickException(shown(message, multiline=True)) from None
