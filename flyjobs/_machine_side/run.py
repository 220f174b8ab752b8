"""Running one call of the user's function on a machine, shared by the worker and scheduled runs.

Importing the function (marked as importing, so that a remote call made at its module's top
level is refused), calling it (a coroutine on the machine's event loop) and cutting the
machine's own frames from the traceback of what it raised. Standard library only, as every
module a machine imports.
"""

from __future__ import annotations

import os
import sys
import types

from flyjobs._machine_side.shared import EventLoop
from flyjobs._machine_side.trace_context import Joined, traced_coroutine
from flyjobs._wire.codec import import_reference
from flyjobs._wire.machine import set_importing_function

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("TAIL_CHARS", "call", "from_user_code", "import_function")

#: Characters of stdout and of stderr kept for the result envelope (or a run's record).
TAIL_CHARS = 64 * 1024
#: The worker's file: its frames, which called the function, are no part of its traceback. Under
#: ``python -m flyjobs.worker`` the module is ``__main__``, so it is found by its place.
_WORKER_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "worker.py")


def import_function(ref: str) -> Callable[..., Any]:
    """The callable ``module:qualname`` names.

    :raises ImportError: it cannot be imported, or is not callable.
    """
    set_importing_function(ref)
    try:
        obj = import_reference(ref)
    except ValueError as exc:
        raise ImportError(str(exc)) from None
    finally:
        set_importing_function(None)
    if not callable(obj):
        raise ImportError(f"{ref} is not callable")
    fn: Callable[..., Any] = obj
    return fn


def call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    loop: EventLoop,
    traceparent: str | None = None,
) -> Any:
    """Call `fn`; a coroutine it returns runs on `loop`. With a ``traceparent`` (the caller
    traces), the function runs in the caller's trace (`flyjobs._machine_side.trace_context`)."""
    if traceparent is None:
        value = fn(*args, **kwargs)
    else:
        with Joined(traceparent):
            value = fn(*args, **kwargs)
    if isinstance(value, types.CoroutineType):
        if traceparent is not None:
            value = traced_coroutine(value, traceparent)
        return loop.run(value)
    return value


def from_user_code(exc: BaseException) -> BaseException:
    """`exc` with the leading frames of the worker (and of asyncio's) cut from its traceback."""
    ours = [_WORKER_FILE, __file__, EventLoop.run.__code__.co_filename]
    for name in ("asyncio", "concurrent.futures"):
        module = sys.modules.get(name)
        if module is not None and module.__file__:
            ours.append(os.path.dirname(module.__file__) + os.sep)
    function = sys.modules.get("flyjobs._declare.function")  # `Function.__call__`, which called it
    if function is not None and function.__file__:
        ours.append(function.__file__)
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(tuple(ours)):
            break
        tb = tb.tb_next
    return exc.with_traceback(tb)
