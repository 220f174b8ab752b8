"""The one machine config of every machine flyjobs creates: calls, batches, pools, schedules.

What a machine is made of (image, size, env, the worker command, the payload file, metadata)
is written here once; what differs is its lifetime: an `Ephemeral` machine runs its calls and
destroys itself, a `Resident` one is a scheduled function's and stays between runs, a
`Claimed` one is a standby machine running a batch's calls, stopped (not destroyed) when its
worker exits. A standby at rest has `standby_config` (no payload), and its shape
(`standby_shape`) says which calls it may take. What a create request carries besides the
config (the region) is `create_args`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._declare.options import CallOptions
from .._declare.schedule import Cron
from .._wire.machine import PAYLOAD_GUEST_PATH, WORKER_CMD
from .._wire.metadata import META_STANDBY, META_STANDBY_IMAGE
from ..machines import MachineConfig

__all__ = (
    "Claimed",
    "Ephemeral",
    "Resident",
    "create_args",
    "machine_config",
    "machine_spec",
    "standby_config",
    "standby_metadata",
    "standby_shape",
)


@dataclass(frozen=True)
class Ephemeral:
    """A machine for calls: destroyed when its worker exits (``auto_destroy``), never
    restarted (a call is retried by the client, on another machine)."""


@dataclass(frozen=True)
class Claimed:
    """A standby machine running calls: its worker's exit stops it (no ``auto_destroy``), so
    it goes back to the standbys; never restarted (a call is retried by the client)."""


@dataclass(frozen=True)
class Resident:
    """A scheduled function's machine: it stays between runs.

    :ivar schedule: Fly's own schedule (``"hourly"``…), which starts the machine, retried
        ``retries`` times when it fails; or a `Cron`, whose resident scheduler runs in the
        machine and is always restarted (it retries its runs itself).
    :ivar keeps_state: a cron resident's root filesystem outlives its stops and restarts
        (``rootfs.persist = "always"``), so that it finds the last tick it took when it comes
        back, and tells (or catches up) the ticks it missed while down.
    """

    schedule: str | Cron
    retries: int
    keeps_state: bool = False


def machine_spec(
    options: CallOptions,
    *,
    image: str,
    payload: bytes,
    metadata: Mapping[str, str] | None,
    lifetime: Ephemeral | Claimed | Resident,
    files: Sequence[tuple[str, bytes]] = (),
) -> dict[str, Any]:
    """The machine config as the Machines API takes it (JSON), before validation; with
    ``metadata`` None it has none (a deploy digests the config without it).

    :param files: more files of the machine, ``(guest_path, content)`` (the call's code
        bundle when it travels inline).
    """
    spec: dict[str, Any] = {
        "image": image,
        **options.guest(),
        "env": dict(options.env),
        "init": {"cmd": list(WORKER_CMD)},
        "files": [
            {
                "guest_path": PAYLOAD_GUEST_PATH,
                "raw_value": base64.b64encode(payload).decode("ascii"),
            },
            *(
                {"guest_path": path, "raw_value": base64.b64encode(content).decode("ascii")}
                for path, content in files
            ),
        ],
    }
    if isinstance(lifetime, Ephemeral):
        spec["auto_destroy"] = True
        spec["restart"] = {"policy": "no"}
    elif isinstance(lifetime, Claimed):
        spec["auto_destroy"] = False
        spec["restart"] = {"policy": "no"}
    elif isinstance(lifetime.schedule, Cron):
        spec["auto_destroy"] = False
        spec["restart"] = {"policy": "always"}
        if lifetime.keeps_state:
            spec["rootfs"] = {"persist": "always"}
    else:
        spec["auto_destroy"] = False
        spec["schedule"] = lifetime.schedule
        spec["restart"] = (
            {"policy": "on-failure", "max_retries": lifetime.retries}
            if lifetime.retries
            else {"policy": "no"}
        )
    if metadata is not None:
        spec["metadata"] = dict(metadata)
    return spec


def machine_config(
    options: CallOptions,
    *,
    image: str,
    payload: bytes,
    metadata: Mapping[str, str],
    lifetime: Ephemeral | Claimed | Resident,
    files: Sequence[tuple[str, bytes]] = (),
) -> MachineConfig:
    """The config of a machine whose worker reads ``payload`` (a call envelope) from its file.

    :param options: the function's options, the settings' defaults applied (size, env).
    :param files: more files of the machine, ``(guest_path, content)``.
    """
    spec = machine_spec(
        options, image=image, payload=payload, metadata=metadata, lifetime=lifetime, files=files
    )
    return MachineConfig.model_validate(spec)


def create_args(options: CallOptions) -> dict[str, Any]:
    """What a create request carries besides the config (keyword arguments of
    `~flyjobs.machines.MachinesClient.create_machine`): the region, where one is set."""
    return {"region": options.region}


def standby_shape(options: CallOptions) -> str:
    """The shape a standby machine has and a call needs: its guest, as ``shared-1x-256mb``
    (kind, CPUs, memory) or ``size-<name>`` for a named Fly size."""
    if options.size is not None:
        return f"size-{options.size}"
    guest = options.guest()["guest"]
    return f"{guest['cpu_kind']}-{guest['cpus']}x-{guest['memory_mb']}mb"


def standby_metadata(options: CallOptions, image: str) -> dict[str, str]:
    """The metadata that marks a standby machine of ``options``' shape and ``image``."""
    return {META_STANDBY: standby_shape(options), META_STANDBY_IMAGE: image}


def standby_config(options: CallOptions, *, image: str) -> MachineConfig:
    """A standby machine at rest: the image and guest of ``options``, the worker command and
    no payload or env (a call brings them when it claims the machine), never restarted nor
    destroyed by itself, and the metadata that marks it (`standby_metadata`)."""
    marks = standby_metadata(options, image)
    spec = machine_spec(options, image=image, payload=b"", metadata=marks, lifetime=Claimed())
    spec["env"] = {}
    del spec["files"]
    return MachineConfig.model_validate(spec)
