"""The options of a remote function, checked when it is decorated.

The options are written once: `Options` names them and their types (for type checkers, which
see every signature that takes them as ``**options: Unpack[Options]``), `_DEFAULTS` gives each
its value when unset. Imported whenever a module decorates a function, which includes the worker
importing the user's module on every machine: no ``dataclasses``, ``re`` or ``typing`` at run
time here (they cost a machine ~12 ms of start).
"""

from __future__ import annotations

from .._exceptions import ConfigError
from .._wire.machine import DEFAULT_TIMEOUT_S, MAX_WAIT_S, RESERVED_ENV
from .output_choice import check_output
from .schedule import check_alert_url, check_schedule, redacted_url

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Literal, TypedDict, Unpack

    from .pool import Pool
    from .schedule import Cron

    class Options(TypedDict, total=False):
        """The options of ``@flyjobs.remote(...)`` and ``fn.with_options(...)``.

        :ivar image: the image machines boot (required on Fly; ignored by the embedded
            emulator).
        :ivar cpus: vCPUs per machine (1, 2, 4, 8 or 16).
        :ivar memory_mb: memory per machine in MB, a multiple of 256.
        :ivar size: a named Fly size (``shared-cpu-2x``...), instead of ``cpus``/``memory_mb``.
        :ivar region: Fly region code; None lets Fly choose.
        :ivar env: extra environment variables of the machine.
        :ivar secrets: names of app secrets the function needs; checked to exist before a call.
        :ivar timeout_s: seconds a call may take from the moment its machine is created (or, on
            a machine that takes more than one input, from the moment it is handed the input)
            to its result.
        :ivar retries: how many times an input whose machine failed without a result (crashed,
            or a platform failure) is run again on another machine.
        :ivar retry_on: exception types of the function itself that are retried too (within
            ``retries``, after an exponential backoff); matched against the rebuilt exception.
        :ivar app: the Fly app (defaults to ``FLY_APP``).
        :ivar pickle: send arguments and results with pickle instead of flyjobs' msgpack codec.
        :ivar schedule: run on a schedule once deployed with ``flyjobs schedule deploy``:
            ``"hourly"``, ``"daily"``, ``"weekly"``, ``"monthly"`` (Fly's own schedules) or a
            :class:`~flyjobs.Cron`; see `flyjobs._declare.schedule` for how each runs.
        :ivar schedule_args: the fixed positional arguments of every scheduled run.
        :ivar schedule_kwargs: the fixed keyword arguments of every scheduled run.
        :ivar alert_url: an ``http(s)`` URL a scheduled function's machine POSTs a signed JSON
            alert to when a run fails or a tick is missed (see `flyjobs._machine_side.alerts`);
            only with ``schedule=``.
        :ivar pool: run ``.remote``/``.spawn`` calls on this `~flyjobs.Pool`'s warm machines
            instead of one machine per call (``.map`` keeps its own batch machines).
        :ivar output: what the lines a call prints show here: ``"live"`` (each line as it is
            printed), ``"errors"`` (only what failed calls printed) or ``"none"``; unset:
            ``FLYJOBS_OUTPUT``, else ``"live"`` for ``.remote``/``.spawn`` and ``"errors"``
            for ``.map`` (see `flyjobs._declare.output_choice`).
        :ivar code: how the function's code reaches its machines: ``"sync"`` ships the
            caller's own modules with each call (the image holds only the dependencies),
            ``"image"`` runs the image's copy; unset: ``FLYJOBS_CODE``, else ``"sync"``.
        """

        image: str | None
        cpus: int | None
        memory_mb: int | None
        size: str | None
        region: str | None
        env: Mapping[str, str] | None
        secrets: Sequence[str]
        timeout_s: float | None
        retries: int
        retry_on: Sequence[type[BaseException]]
        app: str | None
        pickle: bool
        schedule: str | Cron | None
        schedule_args: Sequence[Any]
        schedule_kwargs: Mapping[str, Any] | None
        alert_url: str | None
        pool: Pool | None
        output: Literal["live", "errors", "none"] | None
        code: Literal["sync", "image"] | None


__all__ = ("CallOptions",)

DEFAULT_MEMORY_MB = 256
DEFAULT_CPUS = 1
_CPUS = (1, 2, 4, 8, 16)
#: Every option and its value when unset (an unset None falls back to ``[tool.flyjobs]``).
_DEFAULTS: dict[str, object] = {
    "image": None,
    "cpus": None,
    "memory_mb": None,
    "size": None,
    "region": None,
    "env": None,
    "secrets": (),
    "timeout_s": None,
    "retries": 0,
    "retry_on": (),
    "app": None,
    "pickle": False,
    "schedule": None,
    "schedule_args": (),
    "schedule_kwargs": None,
    "alert_url": None,
    "pool": None,
    "output": None,
    "code": None,
}
#: The values of the ``code`` option (also `flyjobs._settings.CODE_MODES`).
_CODE_MODES = ("sync", "image")


class CallOptions:
    """How each call of a remote function runs (immutable); the options are described on
    `Options`. Unset fields (None) fall back to ``[tool.flyjobs]`` in pyproject.toml, then to
    flyjobs' defaults.

    :raises ConfigError: an option is invalid, or unknown; the message names it and the fix.
    """

    __slots__ = tuple(_DEFAULTS)

    if TYPE_CHECKING:
        # The attributes as read (normalized: env a dict, secrets and retry_on tuples).
        image: str | None
        cpus: int | None
        memory_mb: int | None
        size: str | None
        region: str | None
        env: dict[str, str]
        secrets: tuple[str, ...]
        timeout_s: float | None
        retries: int
        retry_on: tuple[type[BaseException], ...]
        app: str | None
        pickle: bool
        schedule: str | Cron | None
        schedule_args: tuple[Any, ...]
        schedule_kwargs: dict[str, Any]
        alert_url: str | None
        pool: Pool | None
        output: str | None
        code: str | None

    def __init__(self, **options: Unpack[Options]) -> None:
        unknown = sorted(set(options) - set(_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(_DEFAULTS)}"
            )
        values: dict[str, Any] = {**_DEFAULTS, **options}
        values["env"] = dict(values["env"] or {})
        values["secrets"] = tuple(values["secrets"])
        values["retry_on"] = _exception_types(values["retry_on"])
        values["schedule_args"] = tuple(values["schedule_args"])
        values["schedule_kwargs"] = dict(values["schedule_kwargs"] or {})
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CallOptions is immutable")

    def __repr__(self) -> str:
        values = self._values()
        if values["alert_url"]:
            # A webhook URL often holds a secret in its path or query: its host alone.
            values["alert_url"] = redacted_url(values["alert_url"])
        set_ = ", ".join(f"{k}={v!r}" for k, v in values.items() if v != _DEFAULTS[k])
        return f"CallOptions({set_})"

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _DEFAULTS}

    def _check_numbers(self) -> None:
        """Numbers are numbers (a bool or a string would fail later, or mean something else)."""
        for name in ("cpus", "memory_mb", "retries"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{name}={value!r}: give a whole number")
        timeout_s = self.timeout_s
        if timeout_s is not None and (
            isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
        ):
            raise ConfigError(f"timeout_s={timeout_s!r}: must be a positive number of seconds")

    def _check(self) -> None:
        self._check_numbers()
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
        if self.timeout_s is not None and not 0 < self.timeout_s <= MAX_WAIT_S:
            raise ConfigError(
                f"timeout_s={self.timeout_s}: must be a positive number of seconds, at most"
                f" {MAX_WAIT_S:g} (30 days)"
            )
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
        check_output(self.output, "output")
        if self.code is not None and self.code not in _CODE_MODES:
            raise ConfigError(
                f"code={self.code!r}: choose 'sync' (ship the caller's code with each call) or"
                " 'image' (run the image's copy)"
            )
        region = self.region
        if region is not None and not (region.isascii() and region.isalnum() and region.islower()):
            raise ConfigError(f"region={region!r}: use a Fly region code such as 'iad'")
        self._check_schedule()

    def _check_schedule(self) -> None:
        check_alert_url(self.alert_url, scheduled=self.schedule is not None)
        if self.schedule is None and not (self.schedule_args or self.schedule_kwargs):
            return
        check_schedule(self.schedule)
        if self.schedule is None:
            raise ConfigError(
                "schedule_args/schedule_kwargs are the arguments of scheduled runs:"
                " pass schedule= too"
            )

    def replaced(self, **changes: Unpack[Options]) -> CallOptions:
        """These options with ``changes`` applied (checked as at decoration)."""
        values: Any = {**self._values(), **changes}
        return CallOptions(**values)

    def merged(self, defaults: Mapping[str, Any]) -> CallOptions:
        """These options with unset fields taken from ``defaults`` (``[tool.flyjobs]``)."""
        keys = ["region", "timeout_s"] + ([] if self.size else ["cpus", "memory_mb"])
        updates = {k: defaults[k] for k in keys if getattr(self, k) is None and k in defaults}
        return self.replaced(**updates) if updates else self

    @property
    def effective_timeout_s(self) -> float:
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


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    types = value if isinstance(value, (tuple, list)) else (value,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise ConfigError(
                f"retry_on={value!r}: give exception classes, such as retry_on=(TimeoutError,)"
            )
    return tuple(types)


def check_max_cost(value: object, where: str = "max_cost_usd={!r}") -> float | None:
    """A budget cap (``max_cost_usd``) as given: None, or a positive number of USD.

    :raises ConfigError: naming the setting (``where``, formatted with the value) and what to
        give.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where.format(value)}: give a positive number of USD (or None)")
    if not 0 < value < float("inf"):  # NaN compares false too
        raise ConfigError(f"{where.format(value)}: give a positive, finite number of USD")
    return float(value)
