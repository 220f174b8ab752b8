"""Standby machines of an app: made at the create rate (stopped, never booted), listed, removed.

A standby is a machine whose config carries ``flyjobs_standby`` metadata (its shape) and
``flyjobs_standby_image``; everything here leaves every other machine alone. A stopped standby
costs its root filesystem only (Fly: $0.15/GB per 30 days); a claim boots it (see `claim`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Sequence

import anyio

from .._calls.machine_config import create_args, standby_config
from .._declare.options import CallOptions
from .._exceptions import ConfigError, ConflictError, NotFoundError
from .._wire.metadata import META_CALL_ID, META_CLIENT, META_STANDBY, META_STANDBY_IMAGE
from ..machines import Machine, MachinesClient, patient_until

__all__ = ("Standby", "create_standbys", "list_standbys", "remove_standbys", "standby_of")

#: Seconds creating standbys waits out throttling (429) in all: an hour covers 3,600 creates.
_CREATE_PATIENCE_S = 3600.0
#: States of a standby at rest (a standby never started is ``created``).
AT_REST = ("created", "stopped")


@dataclasses.dataclass(frozen=True)
class Standby:
    """One standby machine.

    :ivar shape: its guest (``shared-1x-256mb``, or ``size-<name>``).
    :ivar claimed_by: the ``flyjobs_client`` running a call on it ("" when at rest).
    """

    id: str
    state: str
    region: str
    shape: str
    image: str
    claimed_by: str

    @property
    def at_rest(self) -> bool:
        """Stopped with its resting config: free to claim."""
        return self.state in AT_REST and not self.claimed_by


def standby_of(machine: Machine) -> Standby | None:
    """The standby view of ``machine``, or None if it is not a flyjobs standby."""
    metadata = (machine.config.metadata if machine.config else None) or {}
    if META_STANDBY not in metadata:
        return None
    claimed = metadata.get(META_CLIENT, "") or ("?" if metadata.get(META_CALL_ID) else "")
    return Standby(
        id=machine.id,
        state=machine.state or "unknown",
        region=machine.region or "",
        shape=metadata[META_STANDBY],
        image=metadata.get(META_STANDBY_IMAGE, ""),
        claimed_by=claimed,
    )


async def list_standbys(client: MachinesClient, app: str) -> list[Standby]:
    """The app's standby machines (destroyed ones left out), in the API's order."""
    machines = await client.list_machines(app)
    return [s for m in machines if (s := standby_of(m)) is not None and s.state != "destroyed"]


async def create_standbys(
    client: MachinesClient,
    app: str,
    options: CallOptions,
    *,
    image: str,
    count: int,
    on_created: Callable[[str], None] | None = None,
) -> list[str]:
    """Create ``count`` standby machines of ``options``' shape and ``image``, stopped (never
    booted: ``skip_launch``), one after another at the create rate (429s waited out); return
    their ids. ``on_created`` is told each id as it is made.

    :raises ConfigError: ``count`` is not at least 1.
    :raises APIError, TransportError: a create failed (those made before it remain).
    """
    if count < 1:
        raise ConfigError(f"--count {count}: give at least 1 standby machine to create")
    config = standby_config(options, image=image)
    made: list[str] = []
    with patient_until(anyio.current_time() + _CREATE_PATIENCE_S):
        for _ in range(count):
            machine = await client.create_machine(
                app,
                config,
                name=f"flyjobs-standby-{secrets.token_hex(6)}",
                skip_launch=True,
                **create_args(options),
            )
            made.append(machine.id)
            if on_created is not None:
                on_created(machine.id)
    return made


async def remove_standbys(
    client: MachinesClient, app: str, ids: Sequence[str] | None
) -> list[tuple[str, str]]:
    """Destroy standbys: those of ``ids``, or every one (None); return (id, what happened)
    for each. A standby in use (claimed: under a live lease, or running a call) is left
    alone and said so.

    :raises ConfigError: an id names no standby of the app (before any is removed).
    """
    standbys = {s.id: s for s in await list_standbys(client, app)}
    wanted = list(standbys) if ids is None else list(dict.fromkeys(ids))
    unknown = [i for i in wanted if i not in standbys]
    if unknown:
        raise ConfigError(
            f"no standby machine {', '.join(unknown)} in app {app!r}; `flyjobs standby ls`"
            " lists them"
        )
    done: list[tuple[str, str]] = []
    for machine_id in wanted:
        standby = standbys[machine_id]
        if not standby.at_rest:
            done.append((machine_id, f"in use ({standby.state}): left alone"))
            continue
        try:
            await client.delete_machine(app, machine_id)
        except ConflictError:
            done.append((machine_id, "claimed under its lease: left alone"))
        except NotFoundError:
            done.append((machine_id, "already gone"))
        else:
            done.append((machine_id, "removed"))
    return done
