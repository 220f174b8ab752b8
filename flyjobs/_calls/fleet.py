"""flyjobs' machines as their metadata describes them: listing, and finding and destroying strays.

A machine belongs to flyjobs when its config carries ``flyjobs_function`` metadata (see
`flyjobs._wire.metadata`); every other machine of the app is left alone by everything here.

A *stray* is a flyjobs machine that is still up although no call can want it any more:

- it is past its deadline (``flyjobs_deadline``) by more than `STRAY_GRACE_S` (the worker ends
  itself at its deadline, so such a machine is stuck, or its image does not run the worker), or
- the process that created it (``flyjobs_client``) is gone. That can only be told for a client
  of this host (same hostname, and no process with its pid and start time); machines of other
  hosts' clients are judged by their deadline alone.

Machines without a deadline (scheduled ones) are never strays by deadline. Standby machines
(``flyjobs_standby``) are never strays: they are stopped and reset, not destroyed, by
`flyjobs._standby.claim.recover_standbys`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import psutil

from .._cost.ledger import billed_seconds
from .._cost.prices import PriceTable
from .._exceptions import NotFoundError
from .._wire.log_lines import may_mark
from .._wire.metadata import (
    META_BATCH_ID,
    META_CALL_ID,
    META_CLIENT,
    META_DEADLINE,
    META_FUNCTION,
    META_POOL,
    META_STANDBY,
)
from ..machines import Machine, MachinesClient

__all__ = (
    "STRAY_GRACE_S",
    "JobMachine",
    "Stray",
    "client_identity",
    "client_is_gone",
    "collect_strays",
    "find_strays",
    "list_jobs",
)

#: Seconds past its deadline after which a machine that is still up counts as a stray.
STRAY_GRACE_S = 60.0
_GONE_STATES = frozenset({"destroyed", "destroying"})


@functools.cache
def client_identity() -> str:
    """This process as ``flyjobs_client`` names it: ``"<hostname>/<pid>/<start time>"``."""
    pid = os.getpid()
    started = int(psutil.Process(pid).create_time())
    return f"{socket.gethostname()}/{pid}/{started}"


def client_is_gone(client: str, *, hostname: str | None = None) -> bool:
    """True when ``client`` (a ``flyjobs_client`` value) names a process of this host that no
    longer runs. A client of another host, or a value that cannot be read, is not known to be
    gone, so False."""
    host, _, rest = client.partition("/")
    pid_text, _, started_text = rest.partition("/")
    if host != (hostname or socket.gethostname()) or not pid_text.isdigit():
        return False
    try:
        started = int(psutil.Process(int(pid_text)).create_time())
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    # The pid may have been reused by another process since.
    return started_text.isdigit() and started != int(started_text)


@dataclasses.dataclass(frozen=True)
class JobMachine:
    """One flyjobs machine.

    :ivar deadline: unix seconds by which its worker ends itself (None: no deadline).
    :ivar client: the ``flyjobs_client`` that created it ("" when not recorded).
    :ivar created_at: unix seconds (None when the API did not say).
    :ivar pool: the warm pool (`flyjobs.Pool` name) it belongs to ("" outside pools).
    :ivar cost_usd: USD it has cost, from its start and exit events (so far, if started) at
        its guest's price in its region; None when no price table was given.
    :ivar standby: its shape, when it is a standby machine running a call ("" otherwise).
    """

    id: str
    name: str
    state: str
    region: str
    call_id: str
    batch_id: str
    function: str
    deadline: float | None
    client: str
    created_at: float | None
    pool: str = ""
    cost_usd: float | None = None
    standby: str = ""

    @classmethod
    def from_machine(cls, machine: Machine, prices: PriceTable | None = None) -> JobMachine | None:
        """The flyjobs view of ``machine``, or None if flyjobs did not create it; with
        ``prices``, what it has cost."""
        metadata = (machine.config.metadata if machine.config else None) or {}
        if META_FUNCTION not in metadata:
            return None
        try:
            deadline: float | None = float(metadata.get(META_DEADLINE, ""))
        except ValueError:
            deadline = None
        created = machine.created_at
        return cls(
            id=machine.id,
            name=machine.name or "",
            state=machine.state or "unknown",
            region=machine.region or "",
            call_id=metadata.get(META_CALL_ID, ""),
            batch_id=metadata.get(META_BATCH_ID, ""),
            function=metadata[META_FUNCTION],
            deadline=deadline,
            client=metadata.get(META_CLIENT, ""),
            created_at=created.timestamp() if isinstance(created, datetime) else None,
            pool=metadata.get(META_POOL, ""),
            cost_usd=None if prices is None else _cost_so_far(machine, prices),
            standby=metadata.get(META_STANDBY, ""),
        )

    def may_run(self, call_id: str) -> bool:
        """Whether its worker's marks may name call ``call_id``
        (`flyjobs._wire.log_lines.may_mark`)."""
        return may_mark(call_id, own_call_id=self.call_id, batch_id=self.batch_id, pool=self.pool)

    def age_s(self, now: float) -> float | None:
        """Seconds since it was created, if known."""
        return None if self.created_at is None else max(now - self.created_at, 0.0)

    def as_json(self, now: float) -> dict[str, Any]:
        """Its fields as JSON values, with ``age_s``."""
        return {**dataclasses.asdict(self), "age_s": self.age_s(now)}


@dataclasses.dataclass(frozen=True)
class Stray:
    """A flyjobs machine no call can want any more, and why."""

    machine: JobMachine
    reason: str


def _cost_so_far(machine: Machine, prices: PriceTable) -> float:
    config = machine.config.model_dump(exclude_none=True) if machine.config else None
    usd_per_s = prices.usd_per_s(prices.guest_of(config), machine.region)
    return billed_seconds(machine.events, now_ms=int(time.time() * 1000)) * usd_per_s


async def list_jobs(
    client: MachinesClient,
    app: str,
    *,
    include_deleted: bool = False,
    prices: PriceTable | None = None,
) -> list[JobMachine]:
    """The app's flyjobs machines, oldest first (with ``prices``, what each has cost)."""
    machines = await client.list_machines(app, include_deleted=include_deleted)
    jobs = [job for m in machines if (job := JobMachine.from_machine(m, prices)) is not None]
    return sorted(jobs, key=lambda j: (j.created_at or 0.0, j.id))


def find_strays(
    jobs: Sequence[JobMachine],
    *,
    now: float,
    grace_s: float = STRAY_GRACE_S,
    is_gone: Callable[[str], bool] = client_is_gone,
) -> list[Stray]:
    """The strays among ``jobs`` (see the module docstring), each with its reason."""
    strays = []
    for job in jobs:
        if job.state in _GONE_STATES or job.standby:
            continue
        if job.deadline is not None and now > job.deadline + grace_s:
            late = now - job.deadline
            strays.append(Stray(job, f"past its deadline by {late:.0f} s"))
        elif job.client and is_gone(job.client):
            strays.append(Stray(job, f"its client {job.client} is gone"))
    return strays


async def collect_strays(
    client: MachinesClient,
    app: str,
    *,
    dry_run: bool = False,
    now: float | None = None,
    grace_s: float = STRAY_GRACE_S,
) -> list[Stray]:
    """Find the app's strays and, unless ``dry_run``, destroy them; return them.

    Only machines carrying flyjobs metadata are ever considered.
    """
    jobs = await list_jobs(client, app)
    strays = find_strays(jobs, now=time.time() if now is None else now, grace_s=grace_s)
    if not dry_run:
        for stray in strays:
            try:
                await client.delete_machine(app, stray.machine.id, force=True)
            except NotFoundError:
                pass  # it ended by itself meanwhile
    return strays
