"""``max_cost_usd``: a cap checked before money is committed, never after.

Before a machine is created, or handed another input, the budget adds up what is committed
(machines billed from their events), what the running machines may still cost (each up to its
current input's ``timeout_s`` and the grace it gets to exit, past which flyjobs destroys it),
what earlier runs of a resumed batch spent, and the projected cost of what is about to start
(a new machine or another input, bounded the same way). Only when the sum stays within the cap
does it go ahead: the machines' bills never add up to more than the cap.
"""

from __future__ import annotations

import time

import anyio

from .ledger import Ledger, MachineCost

__all__ = ("Budget",)


class Budget:
    """One batch's or pool's cap; see the module docstring.

    :param max_usd: the cap (USD).
    :param usd_per_s: a new machine's price (USD per second).
    :param hold_s: the longest one input may keep a machine: its ``timeout_s`` (times the
        inputs a machine is created with, for a fixed slice), plus the grace a machine gets
        to exit before it is destroyed.
    """

    def __init__(self, max_usd: float, ledger: Ledger, *, usd_per_s: float, hold_s: float) -> None:
        self.max_usd = max_usd
        self._ledger = ledger
        self._usd_per_s = usd_per_s
        self._hold_s = hold_s
        self._pending = 0
        #: monotonic time each running machine's current input must end by (and it exit)
        self._until: dict[int, float] = {}
        self._changed = anyio.Event()

    def _bound(self, cost: MachineCost, now: float) -> float:
        if cost.settled:
            return cost.usd
        until = self._until.get(id(cost), now)
        return cost.usd_per_s * max(cost.seconds, until - cost.created)

    def committed_usd(self, *, skip: MachineCost | None = None) -> float:
        """USD billed, plus the most the running machines (but ``skip``) may still cost, plus
        what earlier runs spent and the creates under way may cost."""
        now = time.monotonic()
        running = sum(self._bound(m, now) for m in self._ledger.machines if m is not skip)
        pending = self._pending * self._usd_per_s * self._hold_s
        return self._ledger.earlier_usd + running + pending

    def reserve_machine(self, inputs: int = 1) -> bool:
        """Whether a new machine taking ``inputs`` at once fits; if it does, it is reserved
        until `created` (or `release`)."""
        projected = self._usd_per_s * self._hold_s * inputs
        if self.committed_usd() + projected > self.max_usd:
            return False
        self._pending += inputs
        return True

    def created(self, cost: MachineCost, inputs: int = 1) -> None:
        """The reserved machine exists: it is bounded from now by its inputs' hold."""
        self._pending -= inputs
        self._until[id(cost)] = time.monotonic() + self._hold_s * inputs

    def release(self, inputs: int = 1) -> None:
        """The reserved machine was not created."""
        self._pending -= inputs
        self.changed()

    def more(self, cost: MachineCost) -> bool:
        """Whether the running machine ``cost`` may take another input; if so, its bound
        moves to that input's end."""
        until = time.monotonic() + self._hold_s
        projected = cost.usd_per_s * max(cost.seconds, until - cost.created)
        if self.committed_usd(skip=cost) + projected > self.max_usd:
            return False
        self._until[id(cost)] = until
        return True

    @property
    def running(self) -> int:
        """Machines not billed yet, and creates under way."""
        return len(self._ledger.running) + self._pending

    def changed(self) -> None:
        """A machine ended (or a create was given up): whoever waits for room looks again."""
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_changed(self) -> None:
        """Wait until `changed`."""
        await self._changed.wait()
