"""Validation of machine configs as Fly's API does it, before anything runs.

Everything a handler accepts goes through here; what passes is recorded as sent (plus the
defaults Fly fills in) and read back by the rest of the emulator without further checks.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
import signal
from typing import Any

from .._wire.machine import RESERVED_ENV, SCHEDULE_INTERVALS_S
from ._errors import bad_request

__all__ = (
    "SCHEDULE_INTERVALS_S",
    "STOP_SIGNALS",
    "check_argv",
    "check_env",
    "check_region",
    "check_secrets",
    "check_text",
    "effective_guest",
    "parse_duration_s",
    "parse_signal",
    "restart_policy",
    "stop_settings",
    "validate_config",
    "validate_files",
)


#: Named sizes → (cpu_kind, cpus, memory_mb): fly-go's ``MachinePresets`` (machine_types.go).
_SIZES: dict[str, tuple[str, int, int]] = {
    **{f"shared-cpu-{n}x": ("shared", n, 256 * n) for n in (1, 2, 4, 6, 8)},
    **{f"performance-{n}x": ("performance", n, 2048 * n) for n in (1, 2, 4, 6, 8, 10, 12, 14, 16)},
    "a10": ("performance", 8, 32768),
    "a100-40gb": ("performance", 8, 32768),
    "a100-80gb": ("performance", 8, 32768),
    "l40s": ("performance", 8, 32768),
}
#: cpu_kind → (allowed cpu counts, min MB per cpu, max MB per cpu): every count a preset has.
_CPU_KINDS: dict[str, tuple[frozenset[int], int, int]] = {
    "shared": (frozenset(c for k, c, _ in _SIZES.values() if k == "shared"), 256, 2048),
    "performance": (frozenset(c for k, c, _ in _SIZES.values() if k == "performance"), 2048, 8192),
}
_DEFAULT_GUEST = {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
_RESTART_POLICIES = frozenset({"", "no", "always", "on-failure"})
#: Signals a stop may send (the spec's ``StopRequest.signal``).
STOP_SIGNALS = frozenset(
    {"SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM"}
)
_MAX_STOP_TIMEOUT_S = 300.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS_S = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip
#: Longest file name and guest path a Linux filesystem takes (NAME_MAX, PATH_MAX), in bytes.
_NAME_MAX = 255
_PATH_MAX = 4096
_REGION = re.compile(r"[a-z0-9]{1,16}")


def validate_config(raw: object) -> dict[str, Any]:
    """Check a ``config`` object and return it with Fly's defaults filled in.

    :raises ErrorReply: 400 naming the first invalid field.
    """
    if not isinstance(raw, dict):
        raise bad_request("config is required and must be an object")
    config = dict(raw)
    image = config.get("image")
    if not isinstance(image, str) or not image.strip():
        raise bad_request("invalid config.image: an image is required")
    check_text(image, "config.image")
    check_env(config.get("env"), "config.env")
    _check_str_map(config, "metadata")
    _check_init(config.get("init"))
    _check_processes(config.get("processes"))
    _check_guest_and_size(config)
    restart_policy(config)
    stop_settings(config, default_timeout_s=0.0)
    schedule = config.get("schedule")
    if schedule not in (None, "") and schedule not in SCHEDULE_INTERVALS_S:
        raise bad_request(
            f"invalid config.schedule {schedule!r}: use hourly, daily, weekly or monthly"
        )
    if config.get("auto_destroy") is not None and not isinstance(config["auto_destroy"], bool):
        raise bad_request("invalid config.auto_destroy: must be a boolean")
    validate_files(config, secrets=None)
    if "guest" not in config and not config.get("size"):
        config["guest"] = dict(_DEFAULT_GUEST)
    return config


def effective_guest(config: dict[str, Any]) -> tuple[str, int, int]:
    """(cpu_kind, cpus, memory_mb) the machine gets, from ``guest`` or the named ``size``."""
    size = config.get("size")
    if size:
        return _SIZES[size]
    guest = config.get("guest") or {}
    return (
        guest.get("cpu_kind") or "shared",
        guest.get("cpus") or 1,
        guest.get("memory_mb") or 256,
    )


def restart_policy(config: dict[str, Any]) -> tuple[str, int]:
    """(policy, max_retries) with Fly's defaults: ``on-failure`` and 10 retries.

    :raises ErrorReply: 400 on an unknown policy or a negative ``max_retries``.
    """
    restart = config.get("restart") or {}
    if not isinstance(restart, dict):
        raise bad_request("invalid config.restart: must be an object")
    policy = restart.get("policy") or ""
    if policy not in _RESTART_POLICIES:
        raise bad_request(f"invalid config.restart.policy {policy!r}: use no, always or on-failure")
    max_retries = restart.get("max_retries")
    if max_retries is None:
        max_retries = 10
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise bad_request("invalid config.restart.max_retries: must be a non-negative integer")
    return (policy or "on-failure", max_retries)


def stop_settings(config: dict[str, Any], *, default_timeout_s: float) -> tuple[int, float]:
    """(signal number, timeout in seconds) from ``stop_config``; Fly's default signal is SIGINT.

    :raises ErrorReply: 400 on an unknown signal or a timeout over 5 minutes.
    """
    stop_config = config.get("stop_config") or {}
    if not isinstance(stop_config, dict):
        raise bad_request("invalid config.stop_config: must be an object")
    sig = parse_signal(stop_config.get("signal") or "SIGINT", allowed=STOP_SIGNALS)
    timeout = stop_config.get("timeout")
    timeout_s = default_timeout_s if timeout in (None, "") else parse_duration_s(timeout)
    if timeout_s > _MAX_STOP_TIMEOUT_S:
        raise bad_request("invalid stop_config.timeout, cannot exceed 5 minutes")
    return (sig, timeout_s)


def parse_signal(name: object, *, allowed: frozenset[str] | None = None) -> int:
    """Signal number of a name such as ``SIGTERM`` (or ``TERM``, or a number).

    :raises ErrorReply: 400 on an unknown signal, or one outside ``allowed``.
    """
    if isinstance(name, int) and not isinstance(name, bool):
        try:
            return int(signal.Signals(name))
        except ValueError:
            raise bad_request(f"invalid signal {name}") from None
    if not isinstance(name, str):
        raise bad_request("invalid signal: must be a signal name such as SIGTERM")
    full = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
    if (allowed is not None and full not in allowed) or full not in signal.Signals.__members__:
        raise bad_request(f"invalid signal {name!r}")
    return int(signal.Signals[full])


def parse_duration_s(value: object) -> float:
    """Seconds of a Go duration string (``"10s"``, ``"1m30s"``, ``"500ms"``) or a number.

    :raises ErrorReply: 400 when the value is neither.
    """
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return max(float(text), 0.0)
        except ValueError:
            pass
        parts = _DURATION_PART.findall(text)
        if parts and "".join(number + unit for number, unit in parts) == text:
            return sum(float(number) * _DURATION_UNITS_S[unit] for number, unit in parts)
    raise bad_request(f"invalid duration {value!r}: use a Go duration such as 10s")


def validate_files(
    config: dict[str, Any], *, secrets: dict[str, str] | None
) -> list[tuple[str, bytes, int | None]]:
    """Check ``config.files`` and return (path relative to the machine root, content, mode).

    With ``secrets`` None only the shape is checked; otherwise ``secret_name`` is resolved
    against them (a secret holds base64, as on Fly).

    :raises ErrorReply: 400 on a relative, escaping or overlong ``guest_path``, one file whose
        path runs through another (``/f`` and ``/f/g``), a missing or doubled source, bad
        base64, or an unknown secret.
    """
    files = config.get("files") or []
    if not isinstance(files, list):
        raise bad_request("invalid config.files: must be an array")
    result = []
    paths: dict[str, str] = {}
    folders: dict[str, str] = {}
    for item in files:
        if not isinstance(item, dict):
            raise bad_request("invalid config.files entry: must be an object")
        relative = _guest_relative_path(item.get("guest_path"))
        _claim(relative, item["guest_path"], paths, folders)
        sources = [key for key in ("raw_value", "secret_name", "image_config") if item.get(key)]
        if len(sources) != 1:
            raise bad_request(
                f"file {item.get('guest_path')}: set exactly one of raw_value or secret_name"
            )
        if sources[0] == "image_config":
            raise bad_request("file image_config is not supported by the local emulator")
        mode = item.get("mode")
        if mode is not None and (not isinstance(mode, int) or not 0 <= mode <= 0o7777):
            raise bad_request(f"file {item['guest_path']}: invalid mode")
        encoded = item.get("raw_value")
        if sources[0] == "secret_name" and secrets is not None:
            encoded = secrets.get(item["secret_name"])
            if encoded is None:
                raise bad_request(
                    f"file {item['guest_path']}: secret {item['secret_name']!r} not found"
                )
        if encoded is not None:
            result.append((relative, _b64decode(encoded, item["guest_path"]), mode))
    return result


def _guest_relative_path(guest_path: object) -> str:
    if not isinstance(guest_path, str) or not guest_path.startswith("/") or "\0" in guest_path:
        raise bad_request(f"invalid guest_path {guest_path!r}: must be an absolute path")
    parts = [part for part in guest_path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        # ".." is refused outright: joined under the machine root it could climb out of it.
        raise bad_request(f"invalid guest_path {guest_path!r}: must name a file inside the machine")
    if len(guest_path.encode()) > _PATH_MAX or any(
        len(part.encode()) > _NAME_MAX for part in parts
    ):
        raise bad_request(
            f"invalid guest_path {guest_path[:80]!r}...: a path holds at most {_PATH_MAX} bytes "
            f"and each of its names at most {_NAME_MAX}"
        )
    return posixpath.join(*parts)


def _claim(relative: str, guest_path: str, paths: dict[str, str], folders: dict[str, str]) -> None:
    """Record a file's path; refuse it when it is the folder of another file, or vice versa."""
    if relative in folders:
        raise bad_request(
            f"file {guest_path}: {folders[relative]} needs it to be a folder; "
            "a path cannot be both a file and a folder"
        )
    parent = posixpath.dirname(relative)
    while parent:
        if parent in paths:
            raise bad_request(
                f"file {guest_path}: {paths[parent]} is a file, so it cannot be a folder; "
                "a path cannot be both a file and a folder"
            )
        folders.setdefault(parent, guest_path)
        parent = posixpath.dirname(parent)
    paths[relative] = guest_path


def _b64decode(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise bad_request(f"file {where}: content must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"file {where}: content is not valid base64") from None


def check_text(value: str, where: str) -> None:
    """Refuse a NUL character: no process argument, variable or path can hold one.

    :raises ErrorReply: 400 naming ``where``.
    """
    if "\0" in value:
        raise bad_request(f"invalid {where}: contains a NUL character (\\u0000)")


def check_env(env: object, where: str) -> None:
    """Check an environment map (``config.env``, ``processes[].env``).

    Names must be non-empty and hold neither ``=`` nor NUL, values no NUL, and no name may be
    one of the variables the platform sets in every machine (`RESERVED_ENV`).

    :raises ErrorReply: 400 naming the first bad entry.
    """
    if env is None:
        return
    for name, value in _strings_to_strings(env, where).items():
        _check_env_name(name, where)
        if name in RESERVED_ENV:
            raise bad_request(
                f"invalid {where}: {name} is set by the platform in every machine and cannot "
                "be overridden; use another name"
            )
        check_text(value, f"{where}.{name}")


def check_secrets(values: dict[str, str | None]) -> None:
    """Check secrets before they are set: each becomes an environment variable of machines.

    :raises ErrorReply: 400 on a name that cannot be a variable (or is reserved), or a NUL in
        a value.
    """
    for name, value in values.items():
        _check_env_name(name, "secret name")
        if name in RESERVED_ENV:
            raise bad_request(
                f"invalid secret name {name}: the platform sets it in every machine; "
                "use another name"
            )
        if value is not None:
            check_text(value, f"secret {name}")


def check_argv(value: object, where: str) -> None:
    """Check an optional argv: an array of strings without NUL characters.

    :raises ErrorReply: 400 naming ``where``.
    """
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(arg, str) for arg in value):
        raise bad_request(f"invalid {where}: must be an array of strings")
    for index, arg in enumerate(value):
        check_text(arg, f"{where}[{index}]")


def check_region(region: object) -> None:
    """Check the shape of a region code (``iad``, ``lcl``): lowercase letters and digits.

    :raises ErrorReply: 400.
    """
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise bad_request(
            f"invalid region {region!r}: use a region code such as iad (lowercase letters and "
            "digits)"
        )


def _check_env_name(name: str, where: str) -> None:
    if not name or "=" in name or "\0" in name:
        raise bad_request(
            f"invalid {where} {name!r}: an environment variable name must be non-empty and "
            "hold neither '=' nor NUL"
        )


def _strings_to_strings(value: object, where: str) -> dict[str, str]:
    """``value``, checked to map strings to strings (400 naming ``where`` if not)."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise bad_request(f"invalid {where}: must map strings to strings")
    return value


def _check_str_map(config: dict[str, Any], field: str) -> None:
    value = config.get(field)
    if value is None:
        return
    for key, text in _strings_to_strings(value, f"config.{field}").items():
        check_text(key, f"config.{field} key")
        check_text(text, f"config.{field}.{key}")


def _check_init(init: object) -> None:
    if init is None:
        return
    if not isinstance(init, dict):
        raise bad_request("invalid config.init: must be an object")
    for key in ("exec", "entrypoint", "cmd", "kernel_args"):
        check_argv(init.get(key), f"config.init.{key}")


def _check_processes(processes: object) -> None:
    if processes is None:
        return
    if not isinstance(processes, list) or not all(isinstance(p, dict) for p in processes):
        raise bad_request("invalid config.processes: must be an array of objects")
    for index, process in enumerate(processes):
        for key in ("exec", "entrypoint", "cmd"):
            check_argv(process.get(key), f"config.processes[{index}].{key}")
        check_env(process.get("env"), f"config.processes[{index}].env")
        selections = process.get("secrets")
        if selections is None:
            continue
        if not isinstance(selections, list) or not all(isinstance(s, dict) for s in selections):
            raise bad_request(f"invalid config.processes[{index}].secrets: must be an array")
        for selection in selections:
            env_var = selection.get("env_var")
            if env_var is not None:
                if not isinstance(env_var, str):
                    raise bad_request(f"invalid config.processes[{index}].secrets env_var")
                check_env({env_var: ""}, f"config.processes[{index}].secrets")


def _check_guest_and_size(config: dict[str, Any]) -> None:
    size = config.get("size")
    guest = config.get("guest")
    if size and guest:
        raise bad_request("guest and size are mutually exclusive: set one of them")
    if size:
        if size not in _SIZES:
            raise bad_request(f"invalid config.size {size!r}: unknown size name")
        return
    if guest is None:
        return
    if not isinstance(guest, dict):
        raise bad_request("invalid config.guest: must be an object")
    kind = guest.get("cpu_kind") or "shared"
    if kind not in _CPU_KINDS:
        raise bad_request(f"invalid guest.cpu_kind {kind!r}: use shared or performance")
    allowed_cpus, min_mb_per_cpu, max_mb_per_cpu = _CPU_KINDS[kind]
    cpus = guest.get("cpus", 1)
    if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus not in allowed_cpus:
        raise bad_request(f"invalid guest.cpus {cpus!r} for cpu_kind {kind}")
    # Shared cpus start at 256 MB whatever their count; performance cpus need 2 GB each.
    min_mb = min_mb_per_cpu * (cpus if kind == "performance" else 1)
    max_mb = max_mb_per_cpu * cpus
    memory_mb = guest.get("memory_mb", min_mb)
    if not isinstance(memory_mb, int) or isinstance(memory_mb, bool) or memory_mb % 256:
        raise bad_request(f"invalid guest.memory_mb {memory_mb!r}: must be a multiple of 256")
    if not min_mb <= memory_mb <= max_mb:
        raise bad_request(
            f"invalid guest.memory_mb {memory_mb}: {kind} with {cpus} cpu(s) allows "
            f"{min_mb} to {max_mb} MB"
        )
    check_argv(guest.get("kernel_args"), "guest.kernel_args")
