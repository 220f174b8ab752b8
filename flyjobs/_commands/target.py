"""Functions named on a command line: ``FILE_OR_MODULE::FUNCTION``, and their arguments."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from .._declare.function import Function, remote
from .._exceptions import ConfigError

__all__ = ("import_target", "load_function", "parse_argument", "read_inputs")


def load_function(target: str) -> Function[..., Any]:
    """The function ``target`` names (``path/to/file.py::name`` or ``package.module::name``),
    made remote with default options if it is not decorated with ``@flyjobs.remote``.

    A file is imported as a module named after it, with its folder on ``sys.path`` (so a
    machine imports it the same way), or, inside a package, as that package's module
    (``mypkg/jobs.py`` as ``mypkg.jobs``, with the package's parent folder on ``sys.path``); a
    module is imported from the working directory.

    :raises ConfigError: the target is malformed, missing, fails to import, or names no
        function.
    """
    where, sep, name = target.rpartition("::")
    if not sep or not where or not name:
        raise ConfigError(
            f"{target!r}: name a function as FILE_OR_MODULE::FUNCTION,"
            " e.g. examples/hello.py::square or myapp.jobs::square"
        )
    module = import_target(where)
    obj = getattr(module, name, None)
    if isinstance(obj, Function):
        return obj
    if obj is None or not callable(obj) or isinstance(obj, type):
        found = sorted(
            k for k, v in vars(module).items()
            if isinstance(v, Function) or (callable(v) and getattr(v, "__module__", None)
                                           == module.__name__ and not isinstance(v, type))
        )  # fmt: skip
        listed = ", ".join(found) or "none"
        raise ConfigError(f"{where} has no function {name!r} (its functions: {listed})")
    return remote(obj)


def import_target(where: str) -> ModuleType:
    """Import ``where``: a ``.py`` file (as a module named after it, its folder on
    ``sys.path``; inside a package, as the package's module) or a module importable from the
    working directory.

    :raises ConfigError: the file is missing, the module does not exist, or importing it
        failed (its error named, without a traceback).
    """
    module_name = _module_of(where)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name == module_name:
            raise ConfigError(
                f"{where!r} is neither a .py file nor an importable module (from {os.getcwd()})"
            ) from None
        raise ConfigError(f"importing {where} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"importing {where} failed: {type(exc).__name__}: {exc}") from None


def _module_of(where: str) -> str:
    path = Path(where)
    if where.endswith(".py") or os.sep in where:
        if not path.is_file():
            raise ConfigError(f"no such file: {where}")
        folder, name = _package_module(path.resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
        return name
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return where


def _package_module(path: Path) -> tuple[str, str]:
    """(the folder to import from, the module's dotted name) of the file ``path``: its folders
    up to the first without an ``__init__.py`` are its packages (its own imports, absolute or
    relative, then work as they do when the package is imported by name)."""
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    return str(folder), ".".join(parts) or path.stem


def parse_argument(text: str) -> Any:
    """A command-line argument: its JSON value (``3``, ``"a"``, ``[1, 2]``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_inputs(path: Path) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The inputs of a JSON-lines file, one per non-blank line: an array is the positional
    arguments, an object the keyword arguments, any other value the one argument.

    :raises ConfigError: a line is not JSON (naming the line), or the file cannot be read.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path} line {number} is not JSON: {exc}") from None
        if isinstance(value, list):
            yield tuple(value), {}
        elif isinstance(value, dict):
            yield (), value
        else:
            yield (value,), {}
