"""What machines cost: billed seconds from their own events, split among the work they did.

A machine is billed from each ``start`` event to the ``exit`` that follows it (Fly bills a
started machine per second; the events are the machine's own record, not this process's
clock), at its guest's price in its region (`flyjobs._cost.prices`). A `MachineCost` is one
machine's entry: while it runs, its cost so far is estimated from this process's clock; once
it has exited, `settle` replaces that with what its events say. A machine that served several
attempts has its whole bill (boot and idle included) split among them by the seconds each held
it (`Share`), so the shares of a batch add up to its bill. A `Ledger` sums a batch's or a
pool's machines: cost so far, busy and idle machine-seconds, and what failed attempts cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..machines import Machine, MachineEvent
from .prices import PriceTable

__all__ = ("Ledger", "MachineCost", "Share", "billed_seconds", "scheduled_costs")

#: Seconds in the month Fly prices by (30 days).
_MONTH_S = 30 * 86400.0


def billed_seconds(events: Iterable[MachineEvent], *, now_ms: int | None = None) -> float:
    """Seconds a machine was started, from its events: each ``start`` to the ``exit`` (or
    ``suspend``: a suspended machine is billed for its storage only, not its cpus and memory)
    after it; a run not ended yet counts until ``now_ms`` (unix ms; none if None)."""
    total_ms = 0
    started: int | None = None
    for event in sorted(events, key=lambda e: e.timestamp):
        if event.type == "start" and started is None:
            started = event.timestamp
        elif event.type in ("exit", "suspend") and started is not None:
            total_ms += max(0, event.timestamp - started)
            started = None
    if started is not None and now_ms is not None:
        total_ms += max(0, now_ms - started)
    return total_ms / 1000.0


def scheduled_costs(
    machine: Machine, prices: PriceTable, *, runs_per_month: float | None
) -> tuple[float | None, float | None]:
    """A scheduled function's machine: USD per run (its billed seconds, from the events it
    still shows, over the runs they started: boot included) and USD per month (30 days) at
    ``runs_per_month`` runs; a machine that stays started between runs (a cron resident,
    ``runs_per_month`` None) costs its price the whole month. (None, None) before any run.

    A machine stopped between runs also pays for its root filesystem, whose size the API does
    not tell: counted only where its config gives one (``rootfs.size_gb``)."""
    config = machine.config.model_dump(exclude_none=True) if machine.config else None
    usd_per_s = prices.usd_per_s(prices.guest_of(config), machine.region)
    runs = sum(1 for event in machine.events if event.type == "start")
    if not runs:
        return None, None
    now_ms = int(time.time() * 1000)
    per_run = billed_seconds(machine.events, now_ms=now_ms) / runs * usd_per_s
    if runs_per_month is None:
        return per_run, usd_per_s * _MONTH_S
    rootfs = machine.config.rootfs if machine.config else None
    size_gb = float(rootfs.size_gb or 0) if rootfs is not None else 0.0
    return per_run, per_run * runs_per_month + prices.rootfs_usd_per_s(size_gb) * _MONTH_S


@dataclass(eq=False)
class Share:
    """One attempt's part of its machine's cost: the seconds it held the machine.

    :ivar failed: the attempt failed (its cost was wasted, whether or not it was retried).
    """

    machine: MachineCost
    held_s: float = 0.0
    failed: bool = False
    _since: float | None = field(default_factory=time.monotonic, repr=False)

    def end(self, *, failed: bool = False) -> None:
        """The attempt is over (its result is in, or it failed)."""
        if self._since is not None:
            self.held_s = time.monotonic() - self._since
            self._since = None
        self.failed = failed

    @property
    def usd(self) -> float:
        """USD: its machine's bill × its part of the seconds the machine's attempts held it;
        while the machine runs, an estimate from this process's clock."""
        return self.machine.share_of(self)


@dataclass(eq=False)
class MachineCost:
    """One machine's cost; see the module docstring.

    :ivar usd_per_s: its price (USD per second) as created (guest and region).
    :ivar billed_s: seconds billed, from its events, once `settle`d (else None).
    """

    machine_id: str
    usd_per_s: float
    region: str | None = None
    billed_s: float | None = None
    shares: list[Share] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic, repr=False)

    def share(self) -> Share:
        """A new attempt on this machine: its share, its clock started now."""
        share = Share(self)
        self.shares.append(share)
        return share

    @property
    def settled(self) -> bool:
        """True once the bill comes from the machine's events."""
        return self.billed_s is not None

    @property
    def seconds(self) -> float:
        """Billed seconds, or (still running) seconds since it was created."""
        if self.billed_s is not None:
            return self.billed_s
        return time.monotonic() - self.created

    @property
    def usd(self) -> float:
        """USD it cost (settled), or has cost so far (estimated)."""
        return self.seconds * self.usd_per_s

    @property
    def busy_s(self) -> float:
        """Seconds its attempts held it (the rest of its billed time was boot and idle)."""
        now = time.monotonic()
        return sum(s.held_s if s._since is None else now - s._since for s in self.shares)

    def share_of(self, share: Share) -> float:
        if not self.settled:
            held = share.held_s if share._since is None else time.monotonic() - share._since
            return held * self.usd_per_s
        busy = self.busy_s
        if busy <= 0:
            return self.usd / len(self.shares)
        held = share.held_s if share._since is None else time.monotonic() - share._since
        return self.usd * held / busy

    def settle(self, events: Sequence[MachineEvent] | None) -> None:
        """Bill the machine from its events, read once it exited, at its price (its guest in
        the region it was created in); a machine already gone (None) keeps its estimate from
        this process's clock, the best there is."""
        for share in self.shares:
            if share._since is not None:
                share.end(failed=True)
        if events is None:
            self.billed_s = time.monotonic() - self.created
            return
        self.billed_s = billed_seconds(events, now_ms=int(time.time() * 1000))


class Ledger:
    """The machines of one batch or pool, and what they cost (USD) so far."""

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self.machines: list[MachineCost] = []
        #: USD that earlier runs of a resumed batch spent (from its journal)
        self.earlier_usd = 0.0

    def price_of(self, config: Mapping[str, Any], region: str | None) -> float:
        """USD per second of a machine whose config asks for ``config``'s guest (``guest`` or
        ``size``) in ``region``."""
        return self.prices.usd_per_s(self.prices.guest_of(config), region)

    def machine(self, machine_id: str, usd_per_s: float, region: str | None) -> MachineCost:
        """A new machine's entry."""
        cost = MachineCost(machine_id, usd_per_s, region)
        self.machines.append(cost)
        return cost

    @property
    def usd(self) -> float:
        """USD of every machine: billed (settled) or so far (running)."""
        return sum(m.usd for m in self.machines)

    @property
    def settled_usd(self) -> float:
        """USD of the machines that have exited, from their events."""
        return sum(m.usd for m in self.machines if m.settled)

    @property
    def running(self) -> Sequence[MachineCost]:
        """The machines not settled yet."""
        return [m for m in self.machines if not m.settled]

    @property
    def wasted_usd(self) -> float:
        """USD of attempts that failed (retried or not)."""
        return sum(s.usd for m in self.machines for s in m.shares if s.failed)

    @property
    def busy_s(self) -> float:
        """Machine-seconds attempts held machines."""
        return sum(m.busy_s for m in self.machines)

    @property
    def idle_s(self) -> float:
        """Machine-seconds billed (or so far) with no attempt on the machine: boot, waiting
        for work, exiting."""
        return sum(max(0.0, m.seconds - m.busy_s) for m in self.machines)
