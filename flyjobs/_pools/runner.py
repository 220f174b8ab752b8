"""A `~flyjobs.Pool`'s machines: single calls on warm machines that pull their next call.

The pull protocol is the batch's (`flyjobs._batches.batch`): a machine is created with its first
call in ``files[].raw_value`` and ``pulls`` set; the inbox holds each delivery of a result until the
pool answers it (`Ticket.reply`) with the machine's next call, or with "no more work", after
which the worker exits and ``auto_destroy`` removes the machine. A pool differs from a batch in
where its work comes from: calls arrive one by one from the application (`PoolRunner.call`), so
an idle machine waits up to the pool's ``idle_s`` for one (the call envelope's ``idle_s``, which
also bounds the worker's own wait), and the pool keeps ``min`` machines when idle.

A machine has ``max_concurrency`` slots, each a pull loop of its worker (the first call's
``concurrent`` calls start the others, see `flyjobs._wire.machine`): a slot holds one call at a
time, and a slot with nothing to do waits for a call ("parked"). A call goes to a parked slot
if there is one; otherwise it queues, and the pool starts a new machine for it if the queue is
longer than the slots about to look at it (those of starting machines, and those running a
keep-warm call) and the pool is below ``max``. A new machine takes the create's turn
(`pace_create`) before it takes a call, so a call is never held back behind a create while a
running machine frees up.

A machine leaves the pool ("drains": it takes no more calls, and no longer counts toward
``max``) when it has been idle for ``idle_s`` above ``min``, when it exits, and when a call on
it runs past its deadline or is abandoned: that machine is destroyed at once if no other call
of it is running, otherwise it ends by itself once they are done.

With ``Pool(idle="suspend")``, a machine idle for ``idle_s`` above ``min`` goes to sleep
instead: each of its slots is answered with a keep-warm call whose wait is `SUSPENDED_WAIT_S`,
whose delivery the pool holds ("asleep"), and once every slot is asleep the Machines API
suspends it. A call that finds no parked slot wakes a sleeping machine before it creates one:
the machine is started (resumed), and each slot's held delivery is answered with a keep-warm
call, which a resumed worker answers at once; the queued call goes to the first slot that
does. The held delivery's ticket stays open until then, so a worker whose connection was lost
while suspended delivers again and rejoins it (`flyjobs._results.inbox`). A resume that
cold-boots starts the worker anew from the machine's first call, which is therefore a keep-warm
call in such a pool: the new process finds its ticket closed and exits, and the pool, seeing
the machine end, creates a new one for the queued call. A machine asleep for
`SUSPENDED_WAIT_S` is destroyed.

With ``standby``, a machine about to be created is first sought among free standby machines
of the pool's shape (`flyjobs._standby.claim`): one claimed is started by an update with its
first calls instead (no turn of the create rate), and given back when it ends.

The pool starts at `PoolRunner.start` (``pool.start()``) or at its first call, and then starts
machines up to ``min`` with no call (their slots run a keep-warm call, then park). A machine
that has delivered a result and ends below ``min`` (killed, crashed, past a call's deadline) is
replaced the same way; one that never delivered (a broken image) is not, or a pool would make
machines forever.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import anyio

from .._calls.attempt import (
    EXIT_GRACE_S,
    Attempt,
    MachineRun,
    Retry,
    check_secrets,
    outcome,
    pace_create,
    spilled_key,
)
from .._calls.handle import CallState, CallStatus
from .._calls.plan import Plan, plan
from .._calls.runtime import Runtime, current_runtime, get_runtime
from .._cost.budget import Budget
from .._cost.ledger import Ledger
from .._cost.prices import prices_for
from .._exceptions import (
    APIError,
    BudgetExceededError,
    CallCancelledError,
    ConfigError,
    TransportError,
)
from .._standby.claim import Claim, claim_standbys
from .._wire.call_envelope import encode_arguments
from .state import Job, Machine, Slot

if TYPE_CHECKING:
    from .._declare.pool import Pool

__all__ = ("PoolRunner", "pooled_call", "shutdown_pool", "start_pool")

logger = logging.getLogger("flyjobs.pool")

#: What a slot with nothing to do runs: a no-op call whose delivery asks for the next call (a
#: new slot's first call; an idle slot's call that renews its wait, which the worker cannot
#: make forever, by design).
_KEEP_WARM = "flyjobs._wire.machine:keep_warm"
#: Seconds `shutdown_pool` waits for the pool's machines to be destroyed.
_SHUTDOWN_WAIT_S = 30.0
#: Seconds a suspended machine waits for a call (``Pool(idle="suspend")``): the pool then
#: destroys it, and its worker, resumed any later, ends itself (its deadline has passed).
SUSPENDED_WAIT_S = 24 * 3600.0


class PoolRunner:
    """A pool's machines and queued calls on one runtime (see the module docstring)."""

    def __init__(self, runtime: Runtime, pool: Pool) -> None:
        self.runtime = runtime
        self.pool = pool
        self._queue: collections.deque[Job] = collections.deque()
        self._parked: collections.deque[Slot] = collections.deque()
        self._machines: set[Machine] = set()
        self._count = 0  # machines up or starting, not draining
        self._numbers = itertools.count()
        self._shape: tuple[Any, ...] | None = None
        self._plan: Plan | None = None
        self._call_numbers = itertools.count()
        # Keep-warm call ids name this runner too: ``<pool>-k0`` alone would repeat in every
        # process, and a result captured from an earlier one would fit this one's call.
        self._keep_warm_prefix = f"{pool.name}-{secrets.token_hex(4)}-k"
        self._all_gone = anyio.Event()
        self._all_gone.set()
        self.started = False
        self.closed = False
        #: what the pool's machines cost: busy (calls) and idle (waiting, keep-warm) seconds
        self.ledger = Ledger(prices_for(runtime.settings.prices))
        #: the pool's ``max_cost_usd``, once the machines' size is known (`_check`)
        self._budget: Budget | None = None

    # --- calls --------------------------------------------------------------------------

    async def start(self, plan: Plan) -> None:
        """Start the pool: machines up to ``min`` for functions like ``plan``'s; return once
        each is up and waiting for calls.

        :raises: why a machine could not start (`ConfigError`, an API error).
        """
        self._check(plan)
        await check_secrets(self.runtime, plan)
        self.started = True
        jobs = self._fill()
        for job in jobs:
            await job.done.wait()
        for job in jobs:
            if job.error is not None:
                raise job.error

    async def call(self, plan: Plan, arguments: bytes, state: CallState) -> Any:
        """Run one call on the pool; return its value or raise its error."""
        self._check(plan)
        await check_secrets(self.runtime, plan)
        spilled = plan.spilled(arguments)
        if spilled:
            await self.runtime.channel.put_arguments(spilled_key(state.call_id), arguments)
        job = Job(plan, arguments, state)
        self._submit(job)
        if not self.started:
            self.started = True
            self._fill()
        try:
            await job.done.wait()
        except BaseException:
            # Abandoned (cancelled): its machine takes no more calls.
            state.status = CallStatus.cancelled
            if job in self._queue:
                self._queue.remove(job)
            if job.slot is not None:
                self._abandon(job.slot)
            job.settle(error=CallCancelledError("the call was cancelled"))
            raise
        finally:
            state.timings.finished_at = time.time()
            if spilled:
                with anyio.CancelScope(shield=True):
                    await self.runtime.channel.discard_arguments(spilled_key(state.call_id))
        if job.error is not None:
            state.status = CallStatus.failed
            raise job.error
        state.status = CallStatus.succeeded
        return job.value

    def _check(self, plan: Plan) -> None:
        if self.closed:
            raise CallCancelledError(f"pool {self.pool.name} is shutting down")
        if not self.runtime.channel.pulls:
            raise ConfigError(
                "a pool's machines pull their calls over the result inbox, and results go to"
                " the object store here (FLYJOBS_RESULTS=store); use the inbox, or no pool"
            )
        options = plan.options
        shape = (
            plan.app,
            plan.image,
            repr(options.guest()),
            tuple(sorted(options.env.items())),
            options.secrets,
            options.region,
            options.pickle,
        )
        if self._shape is None:
            self._shape, self._plan = shape, plan
            if self.pool.max_cost_usd is not None:
                # A machine given a call (or a wait for one) may run that long, then exit.
                hold_s = max(options.effective_timeout_s, self.pool.idle_s) + EXIT_GRACE_S
                self._budget = Budget(
                    self.pool.max_cost_usd,
                    self.ledger,
                    usd_per_s=self.ledger.price_of(options.guest(), options.region),
                    hold_s=hold_s,
                )
        elif shape != self._shape:
            raise ConfigError(
                f"pool {self.pool.name} runs machines for {self._shape[0]}/{self._shape[1]} with"
                f" other options (size, env, secrets, region or pickle) than {plan.fn_ref} has;"
                " give functions with other machine options their own flyjobs.Pool"
            )

    def _submit(self, job: Job, *, first: bool = False) -> None:
        """Hand ``job`` to a parked slot, or queue it (``first``: ahead of the others, as a
        retry) and start a machine for it if the pool may grow."""
        while self._parked:
            slot = self._parked.popleft()
            if slot.machine.open:
                slot.job, job.slot = job, slot
                slot.event.set()
                return
            slot.event.set()  # its machine is going: the slot ends
        if first:
            self._queue.appendleft(job)
        else:
            self._queue.append(job)
        self._grow()

    def _grow(self) -> None:
        """Wake sleeping machines, then start machines, for queued calls that no slot about to
        look at the queue will take, up to max."""
        coming = sum(
            self.pool.max_concurrency if m.starting else m.warming()
            for m in self._machines
            if not m.draining
        )
        # Those not suspended yet first: waking them costs no resume.
        sleeping = sorted(
            (m for m in self._machines if m.suspending and m.open and not m.wake.is_set()),
            key=lambda m: m.suspended,
        )
        for machine in sleeping:
            if self.closed or len(self._queue) <= coming:
                break
            self._wake(machine)
            coming += self.pool.max_concurrency
        while not self.closed and len(self._queue) > coming and self._count < self.pool.max:
            self._start_machine()
            coming += self.pool.max_concurrency

    def _fill(self) -> list[Job]:
        """Start machines with no call until the pool has ``min``; return their keep-warm
        calls (each settles when its machine is up)."""
        jobs = []
        while not self.closed and self._count < self.pool.min:
            job = self._keep_warm_job()
            self._start_machine(first=job)
            jobs.append(job)
        return jobs

    def _start_machine(self, first: Job | None = None) -> None:
        machine = Machine(anyio.CancelScope(), first=first)
        self._machines.add(machine)
        self._all_gone = anyio.Event()
        self._count += 1
        self.runtime.background(functools.partial(self._machine, machine))

    async def _next_job(self, slot: Slot) -> Job | None:
        """A queued call, or one handed to ``slot`` within the idle period; None if none came
        (or its machine drains)."""
        if self.closed or not slot.machine.open:
            return None
        if self._queue:
            job = slot.job = self._queue.popleft()
            job.slot = slot
            return job
        slot.event = anyio.Event()
        slot.parked_at = time.monotonic()
        self._parked.append(slot)
        with anyio.move_on_after(self.pool.idle_s):
            await slot.event.wait()
        if slot in self._parked:
            self._parked.remove(slot)
        return slot.job

    def _keeps(self, slot: Slot) -> bool:
        """Whether ``slot``, idle for ``idle_s``, keeps waiting (with a keep-warm call): while
        its machine is not idle (another slot was busy since it parked), or at ``min`` (machines
        asleep do not count)."""
        machine = slot.machine
        if self.closed or not machine.open:
            return False
        if machine.busy(other_than=slot) or machine.active_at > slot.parked_at:
            return True
        asleep = sum(1 for m in self._machines if m.counted and m.suspending)
        return self._count - asleep <= self.pool.min

    def _suspends(self, slot: Slot) -> bool:
        """Whether ``slot``'s machine, idle and not kept (`_keeps`), goes to sleep rather than
        exit (a pool with ``idle="suspend"``)."""
        machine = slot.machine
        if self.pool.idle != "suspend" or self.closed or not machine.open:
            return False
        return machine.run is not None and not machine.suspending

    def _start_suspending(self, machine: Machine, slot: Slot) -> None:
        """Put ``machine`` to sleep: ``slot`` and its parked slots each take a keep-warm call
        with the long wait (`_next`), whose delivery `_sleep` holds."""
        machine.suspending = True
        machine.wake = anyio.Event()
        machine.rested = anyio.Event()
        for other in machine.slots:
            if other is not slot and other in self._parked:
                self._parked.remove(other)
                other.job = self._keep_warm_job()
                other.event.set()

    def _wake(self, machine: Machine) -> None:
        """Wake a sleeping machine for queued calls: resumed if it was suspended, its slots
        then each answer a keep-warm call and look at the queue."""
        machine.suspending = False
        for slot in machine.slots:
            slot.waking = slot.asleep
        machine.wake.set()
        if machine.suspended:
            self.runtime.background(functools.partial(self._resume, machine))

    async def _sleep(self, slot: Slot, attempt: Attempt) -> Job | None:
        """Hold ``slot``'s delivery (``attempt``'s) while its machine sleeps (suspended once
        every slot is asleep); when it is woken, answer with a keep-warm call, or with no more
        work if it goes. Returns the slot's next job."""
        machine = slot.machine
        slot.asleep = True
        if all(other.asleep for other in machine.slots) and not machine.wake.is_set():
            machine.suspended = True
            self.runtime.background(functools.partial(self._suspend, machine))
        with anyio.move_on_after(SUSPENDED_WAIT_S):
            await machine.wake.wait()
        slot.asleep = False
        if not machine.wake.is_set() or self.closed or not machine.open:
            slot.waking = False
            self._drain(machine)
            if machine.suspended:
                machine.scope.cancel()  # frozen: it cannot end by itself
            attempt.ticket.reply(None)
            await attempt.close()
            return None
        # A keep-warm call first: a resumed worker answers it at once, one that cold-booted
        # never does (its machine ends), and no call waits on a machine that is not back.
        job = self._keep_warm_job()
        self._hand(job, slot, creating=False)
        slot.waking = False
        assert machine.run is not None  # it delivered
        self._started(job, machine.run.id, created_now=False)
        attempt.ticket.reply(self._payload(job))
        slot.lingering = attempt  # closed when the keep-warm call's result is in
        return job

    async def _suspend(self, machine: Machine) -> None:
        """Suspend ``machine`` (its slots asleep); one that cannot be suspended exits."""
        assert machine.run is not None and self._plan is not None
        try:
            await self.runtime.client.suspend_machine(self._plan.app, machine.run.id)
        except (APIError, TransportError) as exc:
            machine.suspended = False
            self._drain_failed(machine, "could not be suspended", exc, "it exits instead")
        finally:
            machine.rested.set()

    async def _resume(self, machine: Machine) -> None:
        """Resume a suspended machine (once its suspend is done); destroy it if that fails."""
        rested = machine.rested
        await rested.wait()
        if not machine.suspended or machine.run is None or self._plan is None:
            return  # it was never suspended (it exits), or it is gone
        machine.suspended = False
        try:
            await self.runtime.client.start_machine(self._plan.app, machine.run.id)
        except (APIError, TransportError) as exc:
            self._drain_failed(machine, "could not be resumed", exc, "it is destroyed")
            machine.scope.cancel()

    def _keep_warm_job(self) -> Job:
        assert self._plan is not None  # set by the first call or start (_check)
        keep = dataclasses.replace(self._plan, fn_ref=_KEEP_WARM, arg_names=())
        return Job(keep, encode_arguments((), {}), None)

    def _drain_failed(self, machine: Machine, failed: str, exc: Exception, then: str) -> None:
        """A suspend or resume of ``machine`` ``failed`` with ``exc``: say so (and what ``then``
        happens to it), and drain it."""
        assert machine.run is not None
        logger.warning(
            "pool %s: machine %s %s (%s); %s", self.pool.name, machine.run.id, failed, exc, then
        )
        self._drain(machine)

    def _drain(self, machine: Machine) -> None:
        """``machine`` takes no more calls: it leaves the count, and its parked slots end."""
        if machine.draining:
            return
        machine.draining = True
        if machine.counted:
            machine.counted = False
            self._count -= 1
        machine.wake.set()  # its sleeping slots end
        for slot in machine.slots:
            if slot in self._parked:
                self._parked.remove(slot)
                slot.event.set()
        self._grow()  # queued calls may need another machine now

    def _abandon(self, slot: Slot) -> None:
        """The caller gave up on the call ``slot`` runs: its machine takes no more calls, and
        is destroyed now unless another of its slots is busy (it then ends once they are done;
        the abandoned call's result is not used)."""
        machine = slot.machine
        self._drain(machine)
        if not machine.busy(other_than=slot):
            machine.scope.cancel()

    # --- one machine --------------------------------------------------------------------

    async def _machine(self, machine: Machine) -> None:
        runtime = self.runtime
        holder = object()
        try:
            with machine.scope:
                await runtime.limiter.acquire_on_behalf_of(holder)
                claim: Claim | None = None
                try:
                    # The create's turn first: a call queued meanwhile may go to a machine that
                    # frees up, and then this one is not made. A claimed standby needs no turn.
                    job = machine.first
                    if (job is not None or self._queue) and self._plan is not None:
                        claim = await self._claim(self._plan)
                        if claim is None:
                            await pace_create(runtime, self._plan.app)
                    machine.starting = False
                    if job is None and self._queue:
                        job = self._queue.popleft()
                    if job is not None and job.state is not None and self.pool.idle == "suspend":
                        # Its first call is run again by a resume that cold-boots: a keep-warm
                        # one, and the queued call goes to it (or another slot) right after.
                        self._queue.appendleft(job)
                        job = self._keep_warm_job()
                    if job is not None and not self._affords_machine(job):
                        machine.first = None
                        return
                    if job is not None:
                        claim, taken = None, claim  # the run gives it back from now on
                        await self._run(machine, job, taken)
                finally:
                    if claim is not None:
                        await claim.release()
                    runtime.limiter.release_on_behalf_of(holder)
        finally:
            if machine.first is not None:
                machine.first.settle(error=CallCancelledError(f"pool {self.pool.name} ended"))
            machine.starting = False
            if machine.counted:
                machine.counted = False
                self._count -= 1
            self._machines.discard(machine)
            if not self._machines:
                self._all_gone.set()
            self._grow()  # a machine ended: queued calls may need another
            if machine.delivered and self.started and not self.runtime.closing:
                # One that ran (then crashed, was killed, or was destroyed past a call's
                # deadline): back to min. Not one that never delivered a result (a failed create,
                # a broken image), whose replacement would fail again, and again.
                self._fill()

    def _affords_machine(self, job: Job) -> bool:
        """Whether a new machine fits the budget (reserved if so); if not, ``job`` and every
        queued call fail with `BudgetExceededError`."""
        budget = self._budget
        if budget is None or budget.reserve_machine():
            return True
        for failed in (job, *self._queue):
            failed.settle(error=self._over_budget())
        self._queue.clear()
        return False

    def _over_budget(self) -> BudgetExceededError:
        assert self._budget is not None
        cap, spent = self._budget.max_usd, self.ledger.usd
        return BudgetExceededError(
            f"pool {self.pool.name} stopped before max_cost_usd={cap:g}: its machines cost"
            f" ${spent:.4f}, and another machine or call could cost up to its timeout_s (or"
            " idle_s) and exit grace more; raise max_cost_usd or lower timeout_s",
            max_cost_usd=cap,
            spent_usd=spent,
            outcomes=[],
        )

    async def _claim(self, plan: Plan) -> Claim | None:
        """A free standby of the pool's shape, claimed and its lease kept alive, when the pool
        takes standbys; else None."""
        standby = self.pool.standby
        if standby is None:
            # The setting, but not for a pool that suspends its idle machines: it keeps them.
            standby = self.runtime.settings.standby and self.pool.idle != "suspend"
        if not standby:
            return None
        claims = await claim_standbys(
            self.runtime.client,
            plan.app,
            plan.options,
            image=plan.image,
            want=1,
            description=f"flyjobs pool {self.pool.name}",
        )
        for claim in claims:
            self.runtime.background(claim.keep)
        return claims[0] if claims else None

    def _hand(self, job: Job, slot: Slot, *, creating: bool, wait_s: float | None = None) -> Job:
        """Start an attempt of ``job`` on ``slot``: its clocks start now. ``wait_s``: how long
        its delivery may wait for the next call (default: the pool's ``idle_s``)."""
        job.attempts += 1
        slot.job, job.slot = job, slot
        plan, state = job.plan, job.state
        if state is None:
            call_id = f"{self._keep_warm_prefix}{next(self._call_numbers)}"
        else:
            call_id = state.call_id if job.attempts == 1 else f"{state.call_id}-r{job.attempts - 1}"
            slot.machine.active_at = time.monotonic()
        job.attempt = Attempt.open(
            self.runtime,
            plan,
            call_id,
            job.arguments,
            args_key=spilled_key(call_id if state is None else state.call_id),
            replies=True,
            hold_s=self.pool.idle_s if wait_s is None else wait_s,
            trace=None if state is None else state.trace,
            number=job.attempts,
        )
        if state is not None:
            state.status = CallStatus.creating if creating else CallStatus.running
            state.timings.create_started_at = time.time()
        return job

    def _payload(
        self, job: Job, concurrent: list[bytes] | None = None, *, wait_s: float | None = None
    ) -> bytes:
        return _attempt(job).payload(
            job.plan,
            job.arguments,
            pulls=True,
            idle_s=self.pool.idle_s if wait_s is None else wait_s,
            concurrent=concurrent or (),
        )

    async def _run(self, machine: Machine, first: Job, claim: Claim | None) -> None:
        """Create ``machine`` (or start the standby of ``claim``) with ``first`` in its first
        slot (the others start with keep-warm calls) and serve its slots until they end."""
        runtime, plan = self.runtime, self._plan
        assert plan is not None
        machine.slots = [Slot(machine) for _ in range(self.pool.max_concurrency)]
        jobs = [first, *(self._keep_warm_job() for _ in machine.slots[1:])]
        for slot, job in zip(machine.slots, jobs, strict=True):
            slot.held = self._hand(job, slot, creating=True)
        try:
            run = await self._create(machine, plan, claim)
            if run is None:
                return
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drain_on_exit, machine, run)
                async with anyio.create_task_group() as slots:
                    for slot in machine.slots:
                        slots.start_soon(self._slot, slot, run)
                tg.cancel_scope.cancel()
            # Told there is no more work, it exits by itself; destroyed if it lingers.
            await run.finish()
        except BaseException:
            # Cancelled (shutdown, interpreter exit, an abandoned call) or our own failure.
            if machine.run is not None:
                await machine.run.destroy()
            raise
        finally:
            for slot in machine.slots:
                if slot.lingering is not None:
                    await slot.lingering.close()
                    slot.lingering = None
                if slot.held is not None:
                    job, slot.held, slot.job = slot.held, None, None
                    await _attempt(job).close()
                    job.settle(error=CallCancelledError(f"pool {self.pool.name} was shut down"))
            if machine.run is not None:
                runtime.live.forget(plan.app, machine.run.id)
                await machine.run.settle()

    async def _create(self, machine: Machine, plan: Plan, claim: Claim | None) -> MachineRun | None:
        """Create the machine with its slots' calls (or start the standby of ``claim`` with
        them); None if that failed (each call then failed an attempt)."""
        held = [slot.held for slot in machine.slots if slot.held is not None]
        name = f"{self.pool.name}-m{next(self._numbers)}"
        try:
            others = [self._payload(job) for job in held[1:]]
            payload = self._payload(held[0], others)
            deadline = _attempt(held[0]).deadline
            if claim is not None:
                run = await MachineRun.start_claimed(
                    self.runtime, plan, claim, payload, deadline, pulls=True, ledger=self.ledger
                )
            else:
                run = await MachineRun.create(
                    self.runtime,
                    plan,
                    name,
                    payload,
                    deadline,
                    pulls=True,
                    paced=True,
                    ledger=self.ledger,
                )
        except Exception as exc:
            if self._budget is not None:
                self._budget.release()
            if claim is not None:
                await claim.release()  # never started (or already given back)
            for slot in machine.slots:
                if slot.held is not None:
                    job, slot.held, slot.job = slot.held, None, None
                    await _attempt(job).close()
                    self._attempt_failed(job, exc)
            return None
        machine.run = run
        if self._budget is not None and run.cost is not None:
            self._budget.created(run.cost)
        for job in held:
            _busy(job, run)
            self._started(job, run.id, created_now=True)
        return run

    async def _drain_on_exit(self, machine: Machine, run: MachineRun) -> None:
        await run.watch.exited.wait()
        self._drain(machine)

    async def _slot(self, slot: Slot, run: MachineRun) -> None:
        while slot.held is not None:
            slot.held = await self._serve(slot, slot.held, run)

    def _started(self, job: Job, machine_id: str, *, created_now: bool) -> None:
        state = job.state
        if state is not None:
            state.machine_id = machine_id
            if created_now:
                state.timings.created_at = time.time()
            state.status = CallStatus.running
            if job.plan.output == "live":
                self.runtime.live.watch(job.plan.app, machine_id, _attempt(job).call_id)

    async def _serve(self, slot: Slot, job: Job, run: MachineRun) -> Job | None:
        """Wait for the held call's result (or the machine's end, or the deadline); return
        the next call handed to the slot, if any."""
        attempt = _attempt(job)
        body = await run.result(attempt, shared=functools.partial(self._timed_out, slot))
        if job.share is not None:
            job.share.end(failed=not isinstance(body, bytes))
            job.share = None
        slot.job = None
        if slot.lingering is not None:
            await slot.lingering.close()  # it answered after its sleep: it has its call
            slot.lingering = None
        if not isinstance(body, bytes):
            await attempt.close()
            self._attempt_failed(job, body)
            return None
        slot.machine.delivered = True
        if job.state is None:
            job.settle()  # a keep-warm call: the machine is up
        elif not job.done.is_set():
            slot.machine.active_at = time.monotonic()
            job.state.timings.result_at = time.time()
            try:
                value = await outcome(self.runtime, job.plan, body, attempt.call_id, run.id)
            except Exception as exc:
                self._attempt_failed(job, exc)
            else:
                job.settle(value)
        return await self._next(slot, attempt)

    def _timed_out(self, slot: Slot) -> bool:
        """A call on ``slot`` ran past its deadline: its machine takes no more calls. Whether
        another of its slots is busy: the machine is then not destroyed, and its worker ends
        once they are done (see `flyjobs._wire.machine`)."""
        slot.job = None
        self._drain(slot.machine)
        return slot.machine.busy(other_than=slot)

    async def _next(self, slot: Slot, attempt: Attempt) -> Job | None:
        """Answer the held delivery (``attempt``'s) with the slot's next call, or with no more
        work (or hold it while the machine sleeps); no more work when another call, or the wait
        for one, could cross the budget."""
        machine = slot.machine
        slot.waking = False
        if machine.suspending:
            if not (self._queue and not machine.suspended):
                return await self._sleep(slot, attempt)
            self._wake(machine)  # a call came as it was going to sleep: it stays up
        budget = self._budget
        affordable = budget is None or (
            machine.run is not None
            and machine.run.cost is not None
            and budget.more(machine.run.cost)
        )
        job = await self._next_job(slot) if affordable else None
        if job is None and affordable and self._keeps(slot):
            job = self._keep_warm_job()
        if job is None and self._suspends(slot):
            if all(other in self._parked for other in machine.slots if other is not slot):
                self._start_suspending(machine, slot)
            # Its sleep; or, while another slot is in a round trip, one more idle period.
            job = self._keep_warm_job()
        if job is None:
            slot.job = None
            self._drain(slot.machine)  # idle above min (or already draining)
            attempt.ticket.reply(None)
            await attempt.close()
            return None
        # A keep-warm call on a machine going to sleep waits for as long as a sleep may last.
        wait_s = SUSPENDED_WAIT_S if machine.suspending and job.state is None else None
        self._hand(job, slot, creating=False, wait_s=wait_s)
        assert machine.run is not None  # it delivered
        _busy(job, machine.run)
        self._started(job, machine.run.id, created_now=False)
        attempt.ticket.reply(self._payload(job, wait_s=wait_s))
        await attempt.close()
        return job

    def _attempt_failed(self, job: Job, error: BaseException) -> None:
        """An attempt failed: queue the call again (within ``retries``), or settle its error."""
        job.slot = None
        if job.state is None or job.done.is_set():
            job.settle(error=error)  # a keep-warm call (`start` reports it), or an abandoned one
            return
        delay_s = Retry(job.plan.options).again(error, job.attempts, stop=self.closed)
        if delay_s is not None:
            call_id = _attempt(job).call_id
            logger.info("%s failed (%s); retrying on another machine", call_id, error)
            if delay_s > 0:
                self.runtime.background(functools.partial(self._resubmit_later, job, delay_s))
            else:
                self._submit(job, first=True)
            return
        job.settle(error=error)

    async def _resubmit_later(self, job: Job, delay_s: float) -> None:
        await anyio.sleep(delay_s)
        if not job.done.is_set() and not self.closed:
            self._submit(job, first=True)

    # --- the end ------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Fail queued calls, destroy every machine, and wait (bounded) until they are gone."""
        self.closed = True
        while self._queue:
            self._queue.popleft().settle(
                error=CallCancelledError(f"pool {self.pool.name} was shut down")
            )
        for slot in list(self._parked):
            slot.event.set()
        for machine in list(self._machines):
            machine.scope.cancel()
        with anyio.move_on_after(_SHUTDOWN_WAIT_S):
            await self._all_gone.wait()


def _busy(job: Job, run: MachineRun) -> None:
    """A call of the application is on ``run``'s machine from now: its time there is busy."""
    if job.state is not None and run.cost is not None:
        job.share = run.cost.share()


def pool_ledger(pool: Pool) -> dict[str, float]:
    """What the pool's machines have cost since it (last) started; see `Pool.ledger`."""
    runner = pool._runner
    if not isinstance(runner, PoolRunner):
        return {"machines": 0, "cost_usd": 0.0, "busy_s": 0.0, "idle_s": 0.0, "wasted_usd": 0.0}
    ledger = runner.ledger
    return {
        "machines": len(ledger.machines),
        "cost_usd": ledger.usd,
        "busy_s": ledger.busy_s,
        "idle_s": ledger.idle_s,
        "wasted_usd": ledger.wasted_usd,
    }


def _attempt(job: Job) -> Attempt:
    """The attempt ``job`` runs now (one is open from its hand-out until it is answered)."""
    assert job.attempt is not None
    return job.attempt


def runner_for(pool: Pool, runtime: Runtime) -> PoolRunner:
    """The pool's runner on ``runtime`` (made on first use, and again after a shutdown or on a
    new runtime). Called on the runtime's loop."""
    runner = pool._runner
    if not isinstance(runner, PoolRunner) or runner.runtime is not runtime or runner.closed:
        runner = PoolRunner(runtime, pool)
        pool._runner = runner
    return runner


async def pooled_call(runtime: Runtime, plan: Plan, arguments: bytes, state: CallState) -> Any:
    """Run one call of a pooled function (``plan.options.pool``) on its pool."""
    assert plan.options.pool is not None
    return await runner_for(plan.options.pool, runtime).call(plan, arguments, state)


def start_pool(pool: Pool) -> None:
    """Start the pool's ``min`` machines, for the function it was first given to (from any
    thread but the runtime's); return once they are up and waiting for calls."""
    if pool.min == 0:
        return
    attached = pool._attached
    if attached is None:
        raise ConfigError(
            f"{pool!r}.start(): its machines take the options of a function, and no function"
            " has this pool yet; declare one first (@flyjobs.remote(pool=pool), or"
            " fn.with_options(pool=pool))"
        )
    fn, options = attached
    start_plan = plan(fn, options, batch_id=None)
    runtime = get_runtime()

    async def start() -> None:
        await runner_for(pool, runtime).start(start_plan)

    runtime.call(start)


def shutdown_pool(pool: Pool) -> None:
    """Destroy the pool's machines (from any thread but the runtime's)."""
    runner = pool._runner
    if not isinstance(runner, PoolRunner) or runner.runtime is not current_runtime():
        return  # never used, or its runtime has ended (and destroyed its machines)
    runner.runtime.call(runner.shutdown)
