"""References to functions: the ``module:qualname`` a worker imports to run one.

Client side only: the worker resolves the reference with `flyjobs._wire.codec.import_reference`.
"""

from __future__ import annotations

import os
import sys

from flyjobs._exceptions import SerializationError
from flyjobs._wire.codec import import_reference, main_module_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("function_reference",)


def _check_module_attribute(fn: Any, module: str, qualname: str) -> None:
    """Refuse `fn` if its module already binds its name to some other object."""
    if module not in sys.modules:
        return
    try:
        bound = import_reference(f"{module}:{qualname}")
    except AttributeError:
        # Not bound yet: a decorator runs before the module assigns the name.
        return
    # A decorator's wrapper (``functools.wraps``) may stand at the name: the worker calls it.
    if bound != fn and getattr(bound, "__wrapped__", None) is not fn:
        raise SerializationError(
            f"{module}.{qualname} names another object than the function given, so the worker "
            "would import the wrong thing; give the function a module-level name of its own"
        )


def function_reference(fn: Any) -> tuple[str, list[str]]:
    """The ``module:qualname`` reference a worker imports to run `fn`, and extra import roots.

    A function of a script run as ``python path/hello.py`` lives in ``__main__``; it is named
    after the script (``hello:square``) and the script's absolute directory is returned as an
    import root for the worker's ``sys.path``. Otherwise the list of roots is empty.

    :param fn: a function at module top level (or the ``functools.wraps`` wrapper bound to
        its name; the worker calls whatever the name is bound to).
    :raises SerializationError: `fn` is a lambda, a nested function or closure, a bound method,
        not importable by name, or defined in an interactive session; the message says how to
        fix it.
    """
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if not callable(fn) or not isinstance(qualname, str) or not isinstance(module, str):
        raise SerializationError(
            f"{fn!r} has no importable name; use a function defined with def at module top level"
        )
    if "<lambda>" in qualname:
        raise SerializationError(
            f"a lambda ({module}.{qualname}) cannot run on a machine: the worker imports "
            "functions by name; define it with def at module top level"
        )
    if "<locals>" in qualname:
        raise SerializationError(
            f"{module}.{qualname} is defined inside another function, so the worker cannot "
            "import it; move it to module top level (pass what it captured as arguments)"
        )
    if not isinstance(getattr(fn, "__self__", None), (type, type(None), type(sys))):
        raise SerializationError(
            f"{module}.{qualname} is a bound method; use a module-level function or a "
            "staticmethod/classmethod"
        )
    _check_module_attribute(fn, module, qualname)
    if module != "__main__":
        return f"{module}:{qualname}", []
    alias = main_module_name()
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if alias is None or not path:
        raise SerializationError(
            f"{qualname} is defined in an interactive session (no file), so a machine cannot "
            "import it; move it into a module (.py file) and import it from there"
        )
    root = os.path.dirname(os.path.abspath(path))
    for _ in range(alias.count(".")):
        root = os.path.dirname(root)
    return f"{alias}:{qualname}", [root]
