"""Local checks on request values, and the switch that turns them off for server data.

Models built by the caller are checked strictly so a bad value fails here, naming the field, and
not as a 400 from Fly. Models parsed from Fly's answers are validated with ``SERVER_CONTEXT``: the
checks are skipped there, because the server is the authority and a newer Fly may legitimately
send values this version of flyjobs does not know.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final

from pydantic import ValidationInfo

__all__ = (
    "SERVER_CONTEXT",
    "check_absolute_path",
    "check_base64",
    "check_choice",
    "check_env",
    "check_range",
    "duration_seconds",
    "from_server",
    "go_duration",
    "to_go_duration",
)

#: Validation context marking data that came from the API (see module docstring).
SERVER_CONTEXT: Final = {"flyjobs_from_server": True}

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNIT_S: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def from_server(info: ValidationInfo) -> bool:
    """Whether the value being validated was sent by the API (checks are skipped)."""
    context = info.context
    return isinstance(context, dict) and bool(context.get("flyjobs_from_server"))


def check_choice(value: str | None, choices: tuple[str, ...], info: ValidationInfo) -> str | None:
    """Reject a caller's value outside ``choices``; the error names the allowed values."""
    if value is None or from_server(info) or value in choices:
        return value
    raise ValueError(f"must be one of {', '.join(map(repr, choices))}, not {value!r}")


def check_env(value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
    """Reject an environment no process can be given: a name that is empty or holds ``=`` or
    NUL, or a value holding NUL."""
    if value is None or from_server(info):
        return value
    for name, text in value.items():
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"{name!r} is not a valid environment variable name")
        if "\0" in text:
            raise ValueError(f"the value of {name} holds a NUL character")
    return value


def check_range(value: int | None, low: int, high: int | None, info: ValidationInfo) -> int | None:
    """Reject a caller's number below ``low`` or above ``high``."""
    if value is None or from_server(info):
        return value
    if value < low:
        raise ValueError(f"must be at least {low}, not {value}")
    if high is not None and value > high:
        raise ValueError(f"must be at most {high}, not {value}")
    return value


def check_absolute_path(value: str | None, info: ValidationInfo) -> str | None:
    """Reject a relative guest path."""
    if value is None or from_server(info) or value.startswith("/"):
        return value
    raise ValueError(f"must be an absolute path (starting with '/'), not {value!r}")


def check_base64(value: str | None, info: ValidationInfo) -> str | None:
    """Reject a value that is not standard, padded base64."""
    if value is None or from_server(info):
        return value
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64-encoded (standard alphabet, padded)") from None
    return value


def to_go_duration(value: Any, info: ValidationInfo) -> Any:
    """Turn seconds given as a number into a Go duration string (``10`` → ``"10s"``).

    Strings are checked against Go's duration syntax (``"1m30s"``, ``"500ms"``).
    """
    if isinstance(value, bool) or from_server(info):
        return value
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return go_duration(value)
    if isinstance(value, str) and not _is_go_duration(value):
        raise ValueError(f"must be seconds or a Go duration such as '10s', not {value!r}")
    return value


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration string: whole seconds as ``"10s"``, else milliseconds."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def _is_go_duration(text: str) -> bool:
    return text == "0" or (bool(text) and _GO_DURATION.sub("", text) == "")


def duration_seconds(text: str) -> float:
    """Seconds in a Go duration string that passed `to_go_duration`."""
    return sum(float(n) * _GO_UNIT_S[unit] for n, unit in _GO_DURATION.findall(text))
