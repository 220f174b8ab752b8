"""A function defined in ``__main__`` without a file (a notebook cell, ``python -c``, a REPL)
made into a module of its own, by its source, so that it can ship in a bundle.

The module holds the function's source (decorators dropped) and what it uses from the
session's globals: modules (imported again by name), functions of the session (by their
source, the same way), functions and classes of importable modules (imported from there), and
constants (numbers, strings, bytes, and tuples of them). Anything else (an open connection, a
lock, a class defined in the session) cannot be rebuilt from source: a `SerializationError`
names it and says what to do instead.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import sys
import textwrap
import types
from typing import Any

from .._exceptions import SerializationError

__all__ = ("interactive", "main_module_source")

_CONSTANTS = (int, float, complex, str, bytes, bool, type(None))


def interactive(fn: Any) -> bool:
    """Whether ``fn`` was defined in a ``__main__`` that has no file (notebook, REPL, ``-c``)."""
    main = sys.modules.get("__main__")
    return getattr(fn, "__module__", None) == "__main__" and not getattr(main, "__file__", None)


def main_module_source(fn: Any) -> tuple[str, str]:
    """``(module name, source)`` of a module that defines ``fn`` as the session does.

    :raises SerializationError: ``fn`` (or a function of the session it uses) has no source
        to read, is a closure, or uses a global that cannot be rebuilt from source.
    """
    module = _SessionModule(fn.__qualname__, vars(sys.modules["__main__"]))
    module.add_function(fn)
    header = "".join(f"{line}\n" for line in module.header.values())
    source = header + "\n\n" + "\n\n".join(module.bodies)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"flyjobs_main_{digest}", source


class _SessionModule:
    """The module being written for the function named ``where``: its header lines (imports
    and constants, by the global's name) and function bodies, gathered from ``namespace``."""

    def __init__(self, where: str, namespace: dict[str, Any]) -> None:
        self.where = where
        self.namespace = namespace
        self.header: dict[str, str] = {}
        self.bodies: list[str] = []
        self._seen: set[str] = set()

    def add_function(self, fn: Any) -> None:
        name = fn.__name__
        if name in self._seen:
            return
        self._seen.add(name)
        if fn.__closure__:
            raise SerializationError(
                f"{self.where} closes over variables of an enclosing function, which cannot"
                " travel with its source; pass them as arguments"
            )
        try:
            text = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError):
            raise SerializationError(
                f"{self.where}: the source of {name} cannot be read in this session, so it cannot"
                " ship; move it into a module (.py file) and import it from there"
            ) from None
        tree = ast.parse(text)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                node.decorator_list = []  # the decorator (`@flyjobs.remote`) is the caller's
        self.bodies.append(ast.unparse(tree))
        for global_name in sorted(_global_names(fn.__code__)):
            if global_name in self.namespace:
                self._add_global(global_name, self.namespace[global_name])

    def _add_global(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType):
            self.header[name] = f"import {value.__name__} as {name}"
            return
        wrapped = getattr(value, "__wrapped__", value)
        module = getattr(wrapped, "__module__", None)
        qualname = getattr(wrapped, "__qualname__", "")
        if isinstance(wrapped, types.FunctionType) and module == "__main__":
            self.add_function(wrapped)
            return
        if module and module != "__main__" and qualname and "." not in qualname:
            if callable(value) and qualname == getattr(value, "__name__", qualname):
                self.header[name] = f"from {module} import {qualname} as {name}"
                return
        if _constant(value):
            self.header[name] = f"{name} = {value!r}"
            return
        kind = type(value).__name__
        raise SerializationError(
            f"{self.where} uses {name!r}, a {kind} of this session, which cannot be rebuilt on a"
            " machine from source; pass it as an argument, or define it in a module (.py file)"
            " and import it from there"
        )


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _constant(value: Any) -> bool:
    if isinstance(value, _CONSTANTS):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_constant(each) for each in value)
    return False
