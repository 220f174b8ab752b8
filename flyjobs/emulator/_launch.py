"""What a machine runs and with which environment and files.

A machine runs ``config.init`` (``exec``, or ``entrypoint`` + ``cmd``) or ``config.processes``;
failing both, the command the emulator's ``image_commands`` maps its image to; failing that, a
stand-in that stays up until stopped, as a service would. An argv[0] of ``python`` or
``python3`` is the emulator's own interpreter, so ``python -m …`` works in the user's venv.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._wire.machine import MACHINE_ROOT_ENV
from ._validate import effective_guest, validate_files

__all__ = (
    "HOST_ENV",
    "HOST_ENV_PATTERN",
    "Identity",
    "LaunchPlan",
    "free_files",
    "host_env",
    "plan_launch",
    "prepare_root",
)

#: A stand-in service: sleeps until a stop signal, then exits cleanly (code 0).
_SLEEPER = (
    "import signal,sys\n"
    "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
    "    signal.signal(s, lambda *_: sys.exit(0))\n"
    "while True:\n"
    "    signal.pause()\n"
)
_SUPERVISOR = Path(__file__).with_name("_supervise.py")
_PYTHON_NAMES = frozenset({"python", "python3"})


@dataclass(frozen=True, slots=True)
class Identity:
    """The machine facts Fly injects into its environment."""

    app_name: str
    machine_id: str
    region: str
    version: str
    private_ip: str


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """Everything needed to spawn one run of a machine."""

    argv: list[str]
    env: dict[str, str]
    files: list[tuple[str, bytes, int | None]]


#: Host variables a machine gets, standing in for an image's environment: what programs and
#: Python need to run as they do for the user (locale, paths, the venv), and nothing else.
#: Above all none of the host's credentials (``FLY_API_TOKEN``, cloud keys, ``*_SECRET``): a
#: machine sees those only as app secrets, as on Fly.
HOST_ENV = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
        "LD_LIBRARY_PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "SSL_CERT_FILE", "SSL_CERT_DIR",
    }
)  # fmt: skip
#: Host variables passed on too: the locale's ``LC_*`` and Python's own ``PYTHON*`` settings
#: (letters and digits only after ``PYTHON``, as in CPython's, ``PYTHONUTF8`` among them;
#: ``PYTHONANYWHERE_TOKEN`` stays home).
HOST_ENV_PATTERN = re.compile(r"LC_[A-Z]+|PYTHON[A-Z0-9]+")


def host_env(extra: Iterable[str] = ()) -> dict[str, str]:
    """The host variables a machine starts from: `HOST_ENV`, `HOST_ENV_PATTERN`, and the
    names in ``extra`` (the emulator's ``pass_env``)."""
    wanted = HOST_ENV.union(extra)
    return {
        name: value
        for name, value in os.environ.items()
        if name in wanted or HOST_ENV_PATTERN.fullmatch(name)
    }


def plan_launch(
    identity: Identity,
    config: dict[str, Any],
    secrets: dict[str, str],
    image_commands: dict[str, list[str]],
    machine_dir: Path,
    *,
    pass_env: Iterable[str] = (),
) -> LaunchPlan:
    """Work out argv, environment and files of a machine whose config was validated.

    The environment is, from weakest to strongest: `host_env`, ``config.env``, the app's
    secrets, a process's own ``env``, and last the variables the platform sets (Fly's
    ``FLY_*`` and ``FLYJOBS_MACHINE_ROOT``), which nothing overrides.

    Several ``processes`` run under a small supervisor whose spec file is written into
    ``machine_dir`` (beside the root, so the machine cannot rewrite it).

    :raises ErrorReply: 400 when a file names a secret the app does not have.
    """
    root = machine_dir / "root"
    base = host_env(pass_env)
    base["PRIMARY_REGION"] = identity.region
    base.update(config.get("env") or {})
    platform = _fly_env(identity, config)
    platform[MACHINE_ROOT_ENV] = str(root)
    files = validate_files(config, secrets=secrets)
    processes = config.get("processes") or []
    if not processes:
        argv = _argv_of(config.get("init") or {}) or _image_argv(config["image"], image_commands)
        return LaunchPlan(argv=argv, env={**base, **secrets, **platform}, files=files)
    specs: list[tuple[list[str], dict[str, str]]] = []
    for process in processes:
        argv = _argv_of(process) or _image_argv(config["image"], image_commands)
        own = {**_process_secrets(process, secrets), **(process.get("env") or {})}
        specs.append((argv, {**base, **own, **platform}))
    base.update(platform)
    if len(specs) == 1:
        return LaunchPlan(argv=specs[0][0], env=specs[0][1], files=files)
    spec_path = machine_dir / "processes.json"
    fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as spec_file:
        json.dump([{"argv": argv, "env": env} for argv, env in specs], spec_file)
    return LaunchPlan(
        argv=[sys.executable, str(_SUPERVISOR), str(spec_path)], env=base, files=files
    )


def prepare_root(
    machine_dir: Path, files: list[tuple[str, bytes, int | None]], *, keep: bool = False
) -> Path:
    """Reset the machine's root folder and write its files; return the root.

    Every run starts from a clean root, as a Fly machine's filesystem is reset to its image on
    start, unless ``keep`` (``rootfs.persist = "always"``): then what the last run wrote stays
    and only the config's files are written again. Paths were checked at create, so each stays
    inside the root.
    """
    root = machine_dir / "root"
    if keep and root.is_dir() and not root.is_symlink():
        _write_files(root, files)
        return root
    # The last run may have left anything there, a symlink to elsewhere included: remove the
    # link itself, never what it points to.
    if root.is_symlink() or root.is_file():
        root.unlink()
    elif root.exists():
        shutil.rmtree(root)
    root.mkdir()
    _write_files(root, files)
    return root


def _write_files(root: Path, files: list[tuple[str, bytes, int | None]]) -> None:
    for relative, content, mode in files:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()  # a kept root may hold a link a run left: never write through it
        if not target.parent.resolve().is_relative_to(root.resolve()):
            raise OSError(f"{relative}: a folder of the kept root links out of it")
        target.write_bytes(content)
        if mode is not None:
            target.chmod(mode)


def free_files(machine_dir: Path) -> None:
    """Remove a machine's folder: its root and process spec.

    Whatever the machine did to its folder, this never raises and never follows a link.
    """
    with contextlib.suppress(OSError):
        if machine_dir.is_symlink() or machine_dir.is_file():
            machine_dir.unlink()
        else:
            shutil.rmtree(machine_dir, ignore_errors=True)


def _fly_env(identity: Identity, config: dict[str, Any]) -> dict[str, str]:
    _kind, _cpus, memory_mb = effective_guest(config)
    metadata = config.get("metadata") or {}
    return {
        "FLY_APP_NAME": identity.app_name,
        "FLY_MACHINE_ID": identity.machine_id,
        "FLY_ALLOC_ID": identity.machine_id,
        "FLY_REGION": identity.region,
        "FLY_IMAGE_REF": config["image"],
        "FLY_MACHINE_VERSION": identity.version,
        "FLY_PRIVATE_IP": identity.private_ip,
        "FLY_PROCESS_GROUP": metadata.get("fly_process_group", "app"),
        "FLY_VM_MEMORY_MB": str(memory_mb),
    }


def _process_secrets(process: dict[str, Any], secrets: dict[str, str]) -> dict[str, str]:
    chosen = {} if process.get("ignore_app_secrets") else dict(secrets)
    for selection in process.get("secrets") or []:
        name = selection.get("name") or selection.get("env_var")
        if name in secrets and selection.get("env_var"):
            chosen[selection["env_var"]] = secrets[name]
    return chosen


def _argv_of(spec: dict[str, Any]) -> list[str]:
    argv = list(spec.get("exec") or []) or [
        *(spec.get("entrypoint") or []),
        *(spec.get("cmd") or []),
    ]
    return _resolve_python(argv)


def _image_argv(image: str, image_commands: dict[str, list[str]]) -> list[str]:
    bare = image.split("@", 1)[0]
    if ":" in bare.rsplit("/", 1)[-1]:
        bare = bare.rsplit(":", 1)[0]
    argv = image_commands.get(image) or image_commands.get(bare)
    if argv:
        return _resolve_python(list(argv))
    return [sys.executable, "-c", _SLEEPER]


def _resolve_python(argv: list[str]) -> list[str]:
    if argv and argv[0] in _PYTHON_NAMES:
        return [sys.executable, *argv[1:]]
    return argv
