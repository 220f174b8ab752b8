"""``flyjobs code``: what of the caller's code would ship with a function's calls."""

from __future__ import annotations

import inspect

import click

from .._code.bundle import bundle_for
from .._code.delivery import travel
from .._settings import Settings
from .._wire.reference import function_reference
from .common import shows_errors
from .target import load_function

__all__ = ("code",)


@click.command("code")
@click.argument("target", metavar="FILE_OR_MODULE::FUNCTION")
@shows_errors
def code(target: str) -> None:
    """List the files that would ship with FUNCTION's calls, without creating a machine.

    The bundle is the function's top-level package (or module) and the project's own modules
    it imports, within the project root (the folder holding pyproject.toml or .git), never the
    standard library, installed distributions, .git, virtual environments, __pycache__, nor
    what .gitignore and .flyjobsignore exclude. Prints each file and its size, the total, the
    bundle's sha256 and how it would reach a machine.

    \b
    Example:
        flyjobs code examples/hello.py::square
        flyjobs code myapp.jobs::resize
    """
    settings = Settings.load()
    function = load_function(target)
    mode = function.options.code or settings.code
    if mode == "image":
        click.echo(f"{target}: code='image': nothing ships, machines run the image's copy")
        return
    # The reference a call plans with: a script's functions are named after the script.
    fn_ref = function_reference(inspect.unwrap(function))[0]
    bundle = bundle_for(fn_ref, max_bytes=settings.code_max_bytes)
    if bundle is None:
        click.echo(f"{fn_ref}: its module is installed, not the project's: nothing ships")
        return
    click.echo(f"project root: {bundle.root}")
    width = max(len(source.name) for source in bundle.sources)
    for source in bundle.sources:
        click.echo(f"  {source.name:<{width}}  {source.size:>10,} B")
    click.echo(f"total: {len(bundle.sources)} files, {bundle.total_bytes:,} B")
    click.echo(f"zipped: {len(bundle.data):,} B, sha256 {bundle.sha256}")
    click.echo(f"travels: {travel(bundle, settings.code_inline_max_bytes)}")
