"""What a warm pool's runner (`flyjobs._pools.runner.PoolRunner`) tracks: calls (`Job`, with the
attempt each runs now), machines (`Machine`) and their slots (`Slot`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio

from .._calls.attempt import Attempt, MachineRun
from .._calls.handle import CallState
from .._calls.plan import Plan
from .._cost.ledger import Share

__all__ = ("Job", "Machine", "Slot")


class Job:
    """One call of the application, from submission to its outcome (across attempts), or one
    keep-warm call of the pool's (``state`` None; it settles when the machine is up)."""

    __slots__ = (
        "arguments",
        "attempt",
        "attempts",
        "done",
        "error",
        "plan",
        "share",
        "slot",
        "state",
        "value",
    )

    def __init__(self, plan: Plan, arguments: bytes, state: CallState | None) -> None:
        self.plan = plan
        self.arguments = arguments
        #: the caller's view of the call; None for the pool's own keep-warm calls
        self.state = state
        self.attempts = 0
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        #: the slot running the job now, if any
        self.slot: Slot | None = None
        #: the attempt handed out last (its clocks, its ticket)
        self.attempt: Attempt | None = None
        #: the part of its machine's cost of the attempt running now (calls of the
        #: application only: a keep-warm call's time is the pool's idle time)
        self.share: Share | None = None

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.value, self.error = value, error
            self.done.set()


@dataclasses.dataclass(eq=False)
class Slot:
    """One of a machine's slots: the job it holds or was handed, or, parked, waiting for one."""

    machine: Machine
    job: Job | None = None
    #: the job whose attempt the slot holds, until its delivery is answered
    held: Job | None = None
    #: set when a parked slot is handed a job, or told to end
    event: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    #: monotonic time (s) it last parked
    parked_at: float = 0.0
    #: its delivery is held while its machine is (being) suspended
    asleep: bool = False
    #: its machine is resuming: the slot looks at the queue in a moment
    waking: bool = False
    #: the attempt whose delivery a suspended slot held: open until the slot's next result is
    #: in, so that a worker whose held connection was lost delivers again and gets its reply
    lingering: Attempt | None = None


@dataclasses.dataclass(eq=False)
class Machine:
    scope: anyio.CancelScope
    #: the keep-warm call a machine started up to ``min`` begins with (None: a queued call)
    first: Job | None = None
    #: the machine, once created
    run: MachineRun | None = None
    slots: list[Slot] = dataclasses.field(default_factory=list)
    #: counted among the pool's machines (until it drains)
    counted: bool = True
    #: still waiting for its create's turn (it has no call yet)
    starting: bool = True
    #: takes no more calls (see the module docstring)
    draining: bool = False
    #: monotonic time (s) a call of the application last started or ended on it
    active_at: float = 0.0
    #: it delivered a result (a keep-warm call's too): it runs
    delivered: bool = False
    #: its slots are being put to sleep, or it is suspended (``Pool(idle="suspend")``)
    suspending: bool = False
    #: the Machines API suspended it (it is resumed with a start)
    suspended: bool = False
    #: set to end its slots' sleep: it resumes, or it goes
    wake: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    #: set once its suspend request has been answered (a resume waits for it)
    rested: anyio.Event = dataclasses.field(default_factory=anyio.Event)

    @property
    def open(self) -> bool:
        return not self.draining and not (self.run is not None and self.run.watch.exited.is_set())

    def busy(self, other_than: Slot | None = None) -> bool:
        """Whether a slot (other than ``other_than``) holds a call of the application."""
        return any(
            slot.job is not None and slot.job.state is not None
            for slot in self.slots
            if slot is not other_than
        )

    def warming(self) -> int:
        """Slots running a keep-warm call, or waking: they look for a queued call in a
        moment."""
        return sum(
            1
            for slot in self.slots
            if slot.waking or (slot.job is not None and slot.job.state is None)
        )
