"""Where flyjobs finds its settings: code, then the environment, then ``[tool.flyjobs]``.

Read once, at the edge (when the first remote call needs them), and passed on explicitly.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._declare.output_choice import check_output
from ._exceptions import ConfigError

__all__ = ("Settings", "find_pyproject")

DEFAULT_API_HOSTNAME = "https://api.machines.dev"
#: The Machines API as a Fly machine reaches it over the app's private network.
INTERNAL_API_HOSTNAME = "http://_api.internal:4280"
#: The app secret results are authenticated with (also `flyjobs._wire.seal.RESULT_KEY_ENV`).
_RESULT_KEY_ENV = "FLYJOBS_RESULT_KEY"
# Set only when flyjobs is meant to run on Fly: with one of them and no token, running on the
# local emulator instead would silently do something else than asked.
_FLY_ONLY_ENV = ("FLY_API_HOSTNAME", "FLY_APP", "FLYJOBS_IMAGE", _RESULT_KEY_ENV)

# Keys accepted under [tool.flyjobs], with the environment variable that overrides each.
_KEYS: dict[str, str | None] = {
    "app": "FLY_APP",
    "image": "FLYJOBS_IMAGE",
    "api_hostname": "FLY_API_HOSTNAME",
    "region": "FLYJOBS_REGION",
    "memory_mb": None,
    "cpus": None,
    "timeout_s": None,
    "max_machines": "FLYJOBS_MAX_MACHINES",
    "store": "FLYJOBS_STORE",
    "results": "FLYJOBS_RESULTS",
    "rate_limits": "FLYJOBS_RATE_LIMITS",
    "output": "FLYJOBS_OUTPUT",
    "code": "FLYJOBS_CODE",
    "code_max_bytes": "FLYJOBS_CODE_MAX_BYTES",
    "code_inline_max_bytes": "FLYJOBS_CODE_INLINE_MAX_BYTES",
    "prices": "FLYJOBS_PRICES",
    "standby": "FLYJOBS_STANDBY",
}
#: How a function's code reaches its machines (see `flyjobs._code`): shipped with each call, or
#: the image's.
CODE_MODES = ("sync", "image")
#: Defaults of ``code_max_bytes`` and ``code_inline_max_bytes`` (bytes).
DEFAULT_CODE_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_CODE_INLINE_MAX_BYTES = 256 * 1024
_RATE_LIMITS = ("auto", "fly", "off")


def find_pyproject(start: Path) -> Path | None:
    """Return the nearest ``pyproject.toml`` at or above ``start``, or None."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one process.

    :ivar api_token: the Fly API token (``FLY_API_TOKEN``); None selects the embedded emulator.
        Never shown in a repr.
    :ivar api_hostname: base URL of the Machines API (``FLY_API_HOSTNAME``).
    :ivar app: the Fly app the machines run in (``FLY_APP``, ``[tool.flyjobs] app``).
    :ivar image: the image machines boot (``FLYJOBS_IMAGE``, ``[tool.flyjobs] image``).
    :ivar defaults: other ``[tool.flyjobs]`` keys (``region``, ``memory_mb``, ``cpus``,
        ``timeout_s``) used when a function does not set them.
    :ivar max_machines: machines in flight at once, across all calls of this process.
    :ivar store: the object store's URL, ``s3://bucket/prefix`` (``FLYJOBS_STORE``,
        ``[tool.flyjobs] store``); see `flyjobs._results.store.StoreConfig.load` for
        ``BUCKET_NAME``.
    :ivar results: the result channel, ``auto``, ``inbox`` or ``store`` (``FLYJOBS_RESULTS``);
        see `flyjobs._results.channel`.
    :ivar rate_limits: client-side pacing of API requests (``FLYJOBS_RATE_LIMITS``,
        ``[tool.flyjobs] rate_limits``): ``"fly"`` paces to Fly's published limits, ``"off"``
        sends at once, ``"auto"`` (default) is ``"fly"`` except for a loopback API host.
        Throttling (429) is waited out whichever is chosen.
    :ivar output: what calls' printed lines show here when a function does not say
        (``FLYJOBS_OUTPUT``, ``[tool.flyjobs] output``): ``live``, ``errors`` or ``none``;
        None leaves each kind of call its default (see `flyjobs._declare.output_choice`).
    :ivar code: how functions' code reaches machines when a function does not say
        (``FLYJOBS_CODE``, ``[tool.flyjobs] code``): ``"sync"`` (default) ships the caller's
        own modules with each call, ``"image"`` runs the image's copy.
    :ivar code_max_bytes: largest total size (bytes) of the files a call's code bundle holds
        (``FLYJOBS_CODE_MAX_BYTES``; default 32 MiB).
    :ivar code_inline_max_bytes: largest bundle (bytes, zipped) carried inside the machine
        config (``FLYJOBS_CODE_INLINE_MAX_BYTES``; default 256 KiB; 0: never inline).
    :ivar prices: a price table of the user's own (``FLYJOBS_PRICES``, ``[tool.flyjobs]
        prices``; relative to the pyproject.toml that names it), in place of the one shipped
        (see `flyjobs._cost.prices`); None: the shipped one.
    :ivar standby: maps claim standby machines first (``FLYJOBS_STANDBY``, ``[tool.flyjobs]
        standby``; see ``flyjobs standby``); default False.
    :ivar source: the pyproject.toml the settings were read from, if any.
    :ivar result_key: the app secret results are authenticated with (``FLYJOBS_RESULT_KEY``);
        never shown in a repr.
    :ivar in_machine: this process runs on a Fly machine (``FLY_MACHINE_ID`` is set): the app
        and image default to the machine's own, and the embedded emulator is never started.
    :ivar fly_env: the Fly-only environment variables that are set (see `embedded`).
    """

    api_token: str | None = field(default=None, repr=False)
    api_hostname: str = DEFAULT_API_HOSTNAME
    app: str | None = None
    image: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    max_machines: int = 64
    store: str | None = None
    results: str = "auto"
    rate_limits: str = "auto"
    output: str | None = None
    code: str = "sync"
    code_max_bytes: int = DEFAULT_CODE_MAX_BYTES
    code_inline_max_bytes: int = DEFAULT_CODE_INLINE_MAX_BYTES
    prices: Path | None = None
    standby: bool = False
    source: Path | None = None
    result_key: str | None = field(default=None, repr=False)
    in_machine: bool = False
    fly_env: tuple[str, ...] = ()

    @property
    def local_api(self) -> bool:
        """True when the Machines API named is on this host (a loopback address, as ``flyjobs
        dev`` prints it) and not the embedded one: its machines are local processes, so they
        reach an inbox on 127.0.0.1, and the app's result key is read (or set) through the API
        itself when ``FLYJOBS_RESULT_KEY`` is not given (see `flyjobs._results.local_api`)."""
        # lazy: every pytest run loads this (the plugin); the Machines client loads pydantic
        from .machines._core import on_this_host

        return not (self.embedded or self.in_machine) and on_this_host(self.api_hostname)

    @property
    def embedded(self) -> bool:
        """True when calls run on the embedded emulator: no Fly token, no Fly-only variable
        set, and not on a Fly machine."""
        return not self.api_token and not self.in_machine and not self.fly_env

    def check_fly(self, *, app: str | None, image: str | None) -> None:
        """On Fly, check in one go that everything a call needs is set.

        :param app: the app the call names itself (``app=`` on the decorator), if any.
        :param image: the image the call names itself, if any.
        :raises ConfigError: listing every missing setting and where to set each.
        """
        if self.embedded:
            return
        missing = []
        if not self.api_token:
            why = (
                "set it as an app secret (`fly secrets set FLY_API_TOKEN=...`) so calls made"
                " on a machine reach the Machines API"
                if self.in_machine
                else "export FLY_API_TOKEN=$(fly auth token)"
            )
            missing.append(f"FLY_API_TOKEN: {why}")
        if not (app or self.app):
            missing.append(
                "the app: set FLY_APP, `app = ...` under [tool.flyjobs], or app= on @flyjobs.remote"
            )
        if not (image or self.image):
            missing.append(
                "the image: set FLYJOBS_IMAGE, `image = ...` under [tool.flyjobs], or image= on"
                " @flyjobs.remote"
            )
        if not self.result_key and not self.local_api:
            missing.append(
                f"{_RESULT_KEY_ENV}, the key results are authenticated with: generate one"
                f" (`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), set it as"
                f" an app secret (`fly secrets set {_RESULT_KEY_ENV}=...`) and export the same"
                " value here"
            )
        if missing:
            hint = f" (set here: {', '.join(self.fly_env)})" if self.fly_env else ""
            raise ConfigError(
                f"flyjobs is set up to run on Fly{hint} but is missing:\n- "
                + "\n- ".join(missing)
                + "\nUnset the Fly variables to run on the local emulator instead."
            )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        """Read the environment and the nearest ``pyproject.toml``'s ``[tool.flyjobs]`` table.

        :raises ConfigError: when the table has an unknown key or a value of the wrong type.
        """
        env = os.environ if environ is None else environ
        pyproject = find_pyproject(cwd or Path.cwd())
        table = _read_table(pyproject) if pyproject else {}
        merged: dict[str, Any] = dict(table)
        in_machine = bool(env.get("FLY_MACHINE_ID"))
        if in_machine:
            # On a machine, calls go to the machine's own app and image unless told otherwise.
            machine_own = {
                "app": env.get("FLY_APP_NAME"),
                "image": env.get("FLY_IMAGE_REF"),
                "api_hostname": INTERNAL_API_HOSTNAME,
            }
            merged.update({key: value for key, value in machine_own.items() if value})
        for key, var in _KEYS.items():
            if var and env.get(var):
                merged[key] = env[var]
        try:
            max_machines = int(merged.pop("max_machines", 64))
        except ValueError:
            raise ConfigError(
                "max_machines (FLYJOBS_MAX_MACHINES or [tool.flyjobs] max_machines) must be an"
                " integer"
            ) from None
        if max_machines < 1:
            raise ConfigError("max_machines must be at least 1")
        rate_limits = str(merged.pop("rate_limits", "auto")).strip().lower()
        if rate_limits not in _RATE_LIMITS:
            raise ConfigError(
                f"rate_limits={rate_limits!r} (FLYJOBS_RATE_LIMITS or [tool.flyjobs] rate_limits)"
                f" must be one of {', '.join(_RATE_LIMITS)}"
            )
        standby = _flag(merged.pop("standby", False), "FLYJOBS_STANDBY or [tool.flyjobs] standby")
        output = merged.pop("output", None)
        output = check_output(
            output.strip().lower() if isinstance(output, str) else output,
            "FLYJOBS_OUTPUT or [tool.flyjobs] output",
        )
        code = str(merged.pop("code", "sync")).strip().lower()
        if code not in CODE_MODES:
            raise ConfigError(
                f"code={code!r} (FLYJOBS_CODE or [tool.flyjobs] code) must be one of"
                f" {', '.join(CODE_MODES)}"
            )
        prices = _prices_path(env.get("FLYJOBS_PRICES"), merged.pop("prices", None), pyproject)
        return cls(
            api_token=env.get("FLY_API_TOKEN") or None,
            api_hostname=str(merged.pop("api_hostname", DEFAULT_API_HOSTNAME)),
            app=merged.pop("app", None),
            image=merged.pop("image", None),
            defaults=merged,
            max_machines=max_machines,
            store=merged.pop("store", None) or None,
            results=str(merged.pop("results", "auto")),
            rate_limits=rate_limits,
            output=output,
            code=code,
            code_max_bytes=_bytes(merged, "code_max_bytes", DEFAULT_CODE_MAX_BYTES, minimum=1),
            code_inline_max_bytes=_bytes(
                merged, "code_inline_max_bytes", DEFAULT_CODE_INLINE_MAX_BYTES, minimum=0
            ),
            prices=prices,
            standby=standby,
            source=pyproject,
            result_key=env.get(_RESULT_KEY_ENV) or None,
            in_machine=in_machine,
            fly_env=tuple(var for var in _FLY_ONLY_ENV if env.get(var)),
        )

    def require(self, key: str) -> str:
        """Return a setting that must be present, or say where it can be supplied.

        :raises ConfigError: naming the environment variable and the pyproject key.
        """
        value = getattr(self, key, None) or self.defaults.get(key)
        if value:
            return str(value)
        var = _KEYS.get(key)
        where = f"set {var} or " if var else ""
        raise ConfigError(
            f"flyjobs needs '{key}' to run on Fly: {where}add `{key} = ...` under [tool.flyjobs]"
            f" in pyproject.toml, or pass {key}=... to @flyjobs.remote"
        )


def _bytes(merged: dict[str, Any], key: str, default: int, *, minimum: int) -> int:
    """The whole number of bytes ``key`` gives (popped from ``merged``), else ``default``.

    :raises ConfigError: it is not a whole number of at least ``minimum``.
    """
    value = merged.pop(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or number < minimum:
        raise ConfigError(
            f"{key}={value!r} ({_KEYS[key]} or [tool.flyjobs] {key}) must be a whole number"
            f" of bytes, at least {minimum}"
        )
    return number


def _prices_path(env_value: str | None, value: object, pyproject: Path | None) -> Path | None:
    """The price table named by ``FLYJOBS_PRICES`` (relative to the working folder) or else
    ``[tool.flyjobs] prices`` (relative to its pyproject.toml)."""
    if env_value:
        return Path(env_value)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"[tool.flyjobs] prices={value!r}: give the path of a TOML price table"
            ' (prices = "prices.toml")'
        )
    path = Path(value)
    return path if path.is_absolute() or pyproject is None else pyproject.parent / path


def _flag(value: object, where: str) -> bool:
    """A yes/no setting: a TOML boolean, or an environment value (1/0, true/false, yes/no)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{where}={value!r}: give true or false")


def _read_table(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    table = data.get("tool", {}).get("flyjobs", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[tool.flyjobs] in {path} must be a table")
    unknown = sorted(set(table) - set(_KEYS))
    if "token" in table or "api_token" in table:
        raise ConfigError(
            f"{path}: never put a Fly token in pyproject.toml; set FLY_API_TOKEN in the environment"
        )
    if unknown:
        raise ConfigError(
            f"[tool.flyjobs] in {path} has unknown key(s) {', '.join(unknown)};"
            f" known keys: {', '.join(sorted(_KEYS))}"
        )
    return table
