"""No exception group escapes a public call: the error a task group's group stands for.

anyio's task groups wrap what a task raised in an ``ExceptionGroup``, nested once per task group
it crossed; a caller's ``except flyjobs.ConfigError`` would not catch it, and its traceback
repeats every level. Where work leaves the runtime's event loop for the caller (`Runtime.submit`
and `Runtime.call`, the runtime's start, the CLI's commands), the group is replaced by the error
it stands for:

    try:
        return work()
    except BaseExceptionGroup as group:
        error = sole_error(group)
    raise error  # outside the handler: the group does not become the error's context
"""

from __future__ import annotations

__all__ = ("sole_error",)


def sole_error(error: BaseException) -> BaseException:
    """``error`` itself, or for an exception group (nested groups flattened) the one exception it
    stands for: a ``KeyboardInterrupt`` or ``SystemExit`` among them first, else the first one.
    When there were several, a note on it names the others (type and message)."""
    leaves = _leaves(error)
    chosen = next((e for e in leaves if not isinstance(e, Exception)), leaves[0])
    others = [e for e in leaves if e is not chosen]
    if others:
        chosen.add_note(
            "At the same time: " + "; ".join(f"{type(e).__name__}: {e}" for e in others)
        )
    return chosen


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
