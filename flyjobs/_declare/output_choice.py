"""The ``output`` option: what the lines a call prints on its machine show here.

- ``"live"``: every line, on stdout as ``[call_id] line``, while the call runs.
- ``"errors"``: only the lines of calls that failed (their tail, when they fail).
- ``"none"``: nothing (``flyjobs logs CALL_OR_BATCH_ID`` still reads them all).

Set per function (``@remote(output=...)``, ``fn.with_options(output=...)``), per map
(``fn.map(..., output=...)``), or for the process (``FLYJOBS_OUTPUT``, ``[tool.flyjobs]
output``), the first of these that is set winning. Unset, ``.remote``/``.spawn`` show
``"live"`` and ``map`` shows ``"errors"`` (a batch's inputs printing at once is a flood).

Imported whenever a module decorates a function (also on every machine): it imports nothing
but flyjobs' exceptions.
"""

from __future__ import annotations

from .._exceptions import ConfigError

__all__ = ("OUTPUT_CHOICES", "check_output", "resolve_output")

OUTPUT_CHOICES = ("live", "errors", "none")


def check_output(value: object, where: str) -> str | None:
    """``value`` if it is None or one of `OUTPUT_CHOICES`.

    :param where: how the user set it, for the message (``output``, ``FLYJOBS_OUTPUT``...).
    :raises ConfigError: naming the choices.
    """
    if value is None:
        return None
    if isinstance(value, str) and value in OUTPUT_CHOICES:
        return value
    raise ConfigError(
        f"{where}={value!r}: choose 'live' (every line a call prints, as it prints it),"
        " 'errors' (only what failed calls printed) or 'none'"
    )


def resolve_output(option: str | None, setting: str | None, *, batch: bool) -> str:
    """The output of a call: its ``output`` option, else the process's setting, else
    ``"errors"`` for a batch's inputs and ``"live"`` for a single call."""
    return option or setting or ("errors" if batch else "live")
