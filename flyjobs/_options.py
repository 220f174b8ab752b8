"""The options of a remote function, checked when it is decorated.

Imported whenever a module decorates a function, which includes the worker importing the user's
module on every machine: no ``dataclasses``, ``re`` or ``typing`` here (they cost a machine
~12 ms of start).
"""

from __future__ import annotations

from ._exceptions import ConfigError
from ._protocol import RESERVED_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

__all__ = ("CallOptions",)

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MEMORY_MB = 256
DEFAULT_CPUS = 1
_CPUS = (1, 2, 4, 8, 16)
_FIELDS = (
    "image",
    "cpus",
    "memory_mb",
    "size",
    "region",
    "env",
    "secrets",
    "timeout_s",
    "retries",
    "app",
    "pickle",
)


class CallOptions:
    """How each call of a remote function runs (immutable). Unset fields (None) fall back to
    ``[tool.flyjobs]`` in pyproject.toml, then to flyjobs' defaults.

    :ivar image: the image machines boot (required on Fly; ignored by the embedded emulator).
    :ivar cpus: vCPUs per machine (1, 2, 4, 8 or 16).
    :ivar memory_mb: memory per machine in MB, a multiple of 256.
    :ivar size: a named Fly size (``shared-cpu-2x``...), instead of ``cpus``/``memory_mb``.
    :ivar region: Fly region code; None lets Fly choose.
    :ivar env: extra environment variables of the machine.
    :ivar secrets: names of app secrets the function needs; checked to exist before a call.
    :ivar timeout_s: seconds a call may take from machine creation to result.
    :ivar retries: how many times a call whose machine failed without a result is run again on
        a fresh machine (the function's own exceptions are never retried).
    :ivar app: the Fly app (defaults to ``FLY_APP``).
    :ivar pickle: send arguments and results with pickle instead of flyjobs' msgpack codec.
    :raises ConfigError: an option is invalid; the message names it and the fix.
    """

    __slots__ = _FIELDS

    image: str | None
    cpus: int | None
    memory_mb: int | None
    size: str | None
    region: str | None
    env: Mapping[str, str]
    secrets: Sequence[str]
    timeout_s: float | None
    retries: int
    app: str | None
    pickle: bool

    def __init__(
        self,
        *,
        image: str | None = None,
        cpus: int | None = None,
        memory_mb: int | None = None,
        size: str | None = None,
        region: str | None = None,
        env: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        timeout_s: float | None = None,
        retries: int = 0,
        app: str | None = None,
        pickle: bool = False,
    ) -> None:
        values = {
            "image": image,
            "cpus": cpus,
            "memory_mb": memory_mb,
            "size": size,
            "region": region,
            "env": dict(env or {}),
            "secrets": tuple(secrets),
            "timeout_s": timeout_s,
            "retries": retries,
            "app": app,
            "pickle": pickle,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CallOptions is immutable")

    def __repr__(self) -> str:
        set_ = ", ".join(f"{k}={v!r}" for k, v in self._values().items() if v not in (None, {}, ()))
        return f"CallOptions({set_})"

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    def _check(self) -> None:
        if self.memory_mb is not None and (self.memory_mb <= 0 or self.memory_mb % 256):
            raise ConfigError(
                f"memory_mb={self.memory_mb}: Fly machines take memory in multiples of 256 MB"
                " (256, 512, 1024, ...)"
            )
        if self.cpus is not None and self.cpus not in _CPUS:
            raise ConfigError(f"cpus={self.cpus}: choose one of {', '.join(map(str, _CPUS))}")
        if self.size is not None and (self.cpus is not None or self.memory_mb is not None):
            raise ConfigError(
                "size= names cpus and memory together; pass either size or cpus/memory_mb"
            )
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ConfigError(f"timeout_s={self.timeout_s}: must be a positive number of seconds")
        if self.retries < 0:
            raise ConfigError(f"retries={self.retries}: must be 0 or more")
        for name in (*self.env, *self.secrets):
            if not (name.isidentifier() and name.isascii()):
                raise ConfigError(f"{name!r} is not a valid environment variable or secret name")
            if name in RESERVED_ENV:
                raise ConfigError(f"{name} is set by Fly in every machine; use another name")
        for name, value in self.env.items():
            if not isinstance(value, str) or "\0" in value:
                raise ConfigError(
                    f"env[{name!r}]: a value must be a string without NUL characters (\\x00)"
                )
        region = self.region
        if region is not None and not (region.isascii() and region.isalnum() and region.islower()):
            raise ConfigError(f"region={region!r}: use a Fly region code such as 'iad'")

    def merged(self, defaults: Mapping[str, Any]) -> CallOptions:
        """These options with unset fields taken from ``defaults`` (``[tool.flyjobs]``)."""
        keys = ["region", "timeout_s"] + ([] if self.size else ["cpus", "memory_mb"])
        updates = {k: defaults[k] for k in keys if getattr(self, k) is None and k in defaults}
        return CallOptions(**{**self._values(), **updates}) if updates else self

    @property
    def timeout(self) -> float:
        """The call timeout in seconds, default applied."""
        return float(self.timeout_s if self.timeout_s is not None else DEFAULT_TIMEOUT_S)

    def guest(self) -> dict[str, Any]:
        """The machine config's sizing part: ``{"size": ...}`` or ``{"guest": {...}}``."""
        if self.size is not None:
            return {"size": self.size}
        return {
            "guest": {
                "cpu_kind": "shared",
                "cpus": self.cpus or DEFAULT_CPUS,
                "memory_mb": self.memory_mb or DEFAULT_MEMORY_MB,
            }
        }
