"""A `~flyjobs.Pool`'s machines: single calls on warm machines that pull their next call.

The pull protocol is the batch's (`flyjobs._batch`): a machine is created with its first call
in ``files[].raw_value`` and ``pulls`` set; the inbox holds each delivery of a result until the
pool answers it (`Ticket.reply`) with the machine's next call, or with "no more work", after
which the worker exits and ``auto_destroy`` removes the machine. A pool differs from a batch in
where its work comes from: calls arrive one by one from the application (`PoolRunner.call`), so
an idle machine waits up to the pool's ``idle_s`` for one (the call envelope's ``idle_s``, which
also bounds the worker's own wait), and the pool keeps ``min`` machines when idle.

A call goes to an idle machine if there is one; otherwise it queues, and the pool starts a new
machine for it if fewer machines are starting than calls are queued and the pool is below
``max``. A new machine takes the create's turn (`pace_create`) before it takes a call, so a
call is never held back behind a create while a running machine frees up.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
import time
from typing import Any

import anyio

from ._call import CallState, CallStatus
from ._call_envelope import encode_arguments
from ._channel import StoreTicket, close_ticket
from ._dispatch import collect, note_attempts, retry_delay_s, retryable, spilled_key, ticket_for
from ._exceptions import CallCancelledError, CallTimeoutError, ConfigError
from ._inbox import Ticket
from ._plan import WORKER_DEADLINE_SLACK_S, Plan
from ._pool import Pool
from ._runtime import Runtime, current_runtime
from ._supervise import (
    EXIT_GRACE_S,
    ExitWatch,
    check_secrets,
    create_machine,
    destroy,
    exit_error,
    outcome,
    pace_create,
    tag,
)

__all__ = ("PoolRunner", "pooled_call", "shutdown_pool")

logger = logging.getLogger("flyjobs.pool")

#: What a machine held at ``min`` runs when its idle period ends with no call: a no-op call
#: that renews its wait (the worker cannot wait for an answer forever, by design).
_KEEP_WARM = "flyjobs._protocol:keep_warm"
#: Seconds `shutdown_pool` waits for the pool's machines to be destroyed.
_SHUTDOWN_WAIT_S = 30.0


class _Job:
    """One call of the application, from submission to its outcome (across attempts)."""

    __slots__ = ("arguments", "attempts", "done", "error", "machine", "plan", "state", "value")

    def __init__(self, plan: Plan, arguments: bytes, state: CallState | None) -> None:
        self.plan = plan
        self.arguments = arguments
        #: the caller's view of the call; None for the pool's own keep-warm calls
        self.state = state
        self.attempts = 0
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        #: the machine running the job now, if any
        self.machine: _Machine | None = None

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.value, self.error = value, error
            self.done.set()


@dataclasses.dataclass(eq=False)
class _Machine:
    scope: anyio.CancelScope
    id: str | None = None
    #: counted among the pool's machines (until it is told there is no more work for it)
    counted: bool = True
    #: still waiting for its create's turn (it has no call yet)
    starting: bool = True


class _Parked:
    """An idle machine waiting for a call (`PoolRunner._submit` hands it one)."""

    __slots__ = ("event", "job")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.job: _Job | None = None


@dataclasses.dataclass
class _Held:
    """The call a machine holds: its job, ticket and deadline (unix s)."""

    job: _Job
    call_id: str
    ticket: Ticket | StoreTicket
    deadline: float
    arguments_url: str | None


class PoolRunner:
    """A pool's machines and queued calls on one runtime (see the module docstring)."""

    def __init__(self, runtime: Runtime, pool: Pool) -> None:
        self.runtime = runtime
        self.pool = pool
        self._queue: collections.deque[_Job] = collections.deque()
        self._parked: collections.deque[_Parked] = collections.deque()
        self._machines: set[_Machine] = set()
        self._count = 0  # machines up or starting, not yet told to exit
        self._numbers = itertools.count()
        self._shape: tuple[Any, ...] | None = None
        self._call_numbers = itertools.count()
        self._all_gone = anyio.Event()
        self._all_gone.set()
        self.closed = False

    # --- calls --------------------------------------------------------------------------

    async def call(self, plan: Plan, arguments: bytes, state: CallState) -> Any:
        """Run one call on the pool; return its value or raise its error."""
        self._check(plan)
        await check_secrets(self.runtime, plan)
        store = self.runtime.store if plan.spilled(arguments) else None
        if store is not None:
            await store.put(spilled_key(state.call_id), arguments)
        job = _Job(plan, arguments, state)
        self._submit(job)
        try:
            await job.done.wait()
        except BaseException:
            # Abandoned (cancelled): a machine still running it is destroyed with it.
            state.status = CallStatus.cancelled
            if job in self._queue:
                self._queue.remove(job)
            if job.machine is not None:
                job.machine.scope.cancel()
            job.settle(error=CallCancelledError("the call was cancelled"))
            raise
        finally:
            state.timings.finished_at = time.time()
            if store is not None:
                with anyio.CancelScope(shield=True):
                    await store.discard(spilled_key(state.call_id))
        if job.error is not None:
            state.status = CallStatus.failed
            raise job.error
        state.status = CallStatus.succeeded
        return job.value

    def _check(self, plan: Plan) -> None:
        if self.closed:
            raise CallCancelledError(f"pool {self.pool.name} is shutting down")
        if self.runtime.channel.mode != "inbox":
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
            self._shape = shape
        elif shape != self._shape:
            raise ConfigError(
                f"pool {self.pool.name} runs machines for {self._shape[0]}/{self._shape[1]} with"
                f" other options (size, env, secrets, region or pickle) than {plan.fn_ref} has;"
                " give functions with other machine options their own flyjobs.Pool"
            )

    def _submit(self, job: _Job, *, first: bool = False) -> None:
        """Hand ``job`` to an idle machine, or queue it (``first``: ahead of the others, as a
        retry) and start a machine for it if the pool may grow."""
        if self._parked:
            parked = self._parked.popleft()
            parked.job = job
            parked.event.set()
            return
        if first:
            self._queue.appendleft(job)
        else:
            self._queue.append(job)
        self._grow()

    def _grow(self) -> None:
        """Start machines for queued calls that no starting machine will take, up to max."""
        starting = sum(1 for m in self._machines if m.starting)
        while not self.closed and len(self._queue) > starting and self._count < self.pool.max:
            machine = _Machine(anyio.CancelScope())
            self._machines.add(machine)
            self._all_gone = anyio.Event()
            self._count += 1
            starting += 1
            self.runtime.background(functools.partial(self._machine, machine))

    async def _next_job(self) -> _Job | None:
        """A queued call, or one submitted within the idle period; None if none came."""
        if self._queue:
            return self._queue.popleft()
        parked = _Parked()
        self._parked.append(parked)
        with anyio.move_on_after(self.pool.idle_s):
            await parked.event.wait()
        if parked.job is None:
            self._parked.remove(parked)
        return parked.job

    def _keep_warm_job(self, plan: Plan) -> _Job:
        keep = dataclasses.replace(plan, fn_ref=_KEEP_WARM, arg_names=())
        return _Job(keep, encode_arguments((), {}), None)

    # --- one machine --------------------------------------------------------------------

    async def _machine(self, machine: _Machine) -> None:
        runtime = self.runtime
        holder = object()
        try:
            with machine.scope:
                await runtime.limiter.acquire_on_behalf_of(holder)
                try:
                    # The create's turn first: a call queued meanwhile may go to a machine that
                    # frees up, and then this one is not made.
                    job = None
                    if self._queue:
                        await pace_create(runtime, self._queue[0].plan.app)
                    machine.starting = False
                    if self._queue:
                        job = self._queue.popleft()
                    if job is not None:
                        await self._run(machine, job)
                finally:
                    runtime.limiter.release_on_behalf_of(holder)
        finally:
            machine.starting = False
            if machine.counted:
                self._count -= 1
            self._machines.discard(machine)
            if not self._machines:
                self._all_gone.set()
            self._grow()  # a machine ended: queued calls may need another

    def _hand(self, job: _Job, *, creating: bool) -> _Held:
        """Start an attempt of ``job``: its clocks start now, with its machine."""
        job.attempts += 1
        plan, state = job.plan, job.state
        if state is None:
            call_id = f"{self.pool.name}-k{next(self._call_numbers)}"
        else:
            call_id = state.call_id if job.attempts == 1 else f"{state.call_id}-r{job.attempts - 1}"
        deadline = time.time() + plan.options.effective_timeout_s
        arguments_url = None
        store = self.runtime.store
        if plan.spilled(job.arguments) and store is not None and state is not None:
            arguments_url = store.presign(
                "GET", spilled_key(state.call_id), expires_at=deadline + WORKER_DEADLINE_SLACK_S
            )
        ticket = ticket_for(self.runtime, call_id, deadline, replies=True, hold_s=self.pool.idle_s)
        if state is not None:
            state.status = CallStatus.creating if creating else CallStatus.running
            state.timings.create_started_at = time.time()
        return _Held(job, call_id, ticket, deadline, arguments_url)

    def _payload(self, held: _Held) -> bytes:
        return held.job.plan.payload(
            held.call_id,
            held.job.arguments,
            deadline=held.deadline,
            result_url=held.ticket.url,
            arguments_url=held.arguments_url,
            pulls=True,
            idle_s=self.pool.idle_s,
        )

    async def _run(self, machine: _Machine, job: _Job) -> None:
        runtime, plan = self.runtime, job.plan
        first = self._hand(job, creating=True)
        held: _Held | None = first
        job.machine = machine
        watch: ExitWatch | None = None
        try:
            name = f"{self.pool.name}-m{next(self._numbers)}"
            try:
                payload = self._payload(first)
                created = await create_machine(
                    runtime, plan, name, payload, first.deadline, pulls=True, paced=True
                )
            except Exception as exc:
                held = None
                await _close(first)
                self._attempt_failed(first, exc)
                return
            machine.id = created.id
            watch = ExitWatch(runtime, plan.app, created.id)
            self._started(first, machine, created_now=True)
            while held is not None:
                held = await self._serve(held, watch, machine)
            # Told there is no more work, it exits by itself; destroyed if it lingers.
            with anyio.move_on_after(EXIT_GRACE_S):
                await watch.exited.wait()
            if not watch.exited.is_set():
                watch.stop()
                await destroy(runtime, plan.app, created.id)
        except BaseException:
            # Cancelled (shutdown, interpreter exit, an abandoned call) or our own failure.
            with anyio.CancelScope(shield=True):
                if watch is not None:
                    watch.stop()
                if machine.id is not None:
                    await destroy(runtime, plan.app, machine.id)
            raise
        finally:
            if held is not None:
                await _close(held)
                held.job.settle(error=CallCancelledError(f"pool {self.pool.name} was shut down"))
            if machine.id is not None:
                runtime.live.forget(plan.app, machine.id)

    def _started(self, held: _Held, machine: _Machine, *, created_now: bool) -> None:
        state, machine_id = held.job.state, machine.id
        assert machine_id is not None
        held.job.machine = machine
        if state is not None:
            state.machine_id = machine_id
            if created_now:
                state.timings.created_at = time.time()
            state.status = CallStatus.running
            self.runtime.live.watch(held.job.plan.app, machine_id, held.call_id)

    async def _serve(self, held: _Held, watch: ExitWatch, machine: _Machine) -> _Held | None:
        """Wait for the held call's result (or the machine's death, or the deadline); return
        the next call handed to the machine, if any."""
        runtime, job = self.runtime, held.job
        plan, machine_id = job.plan, watch.machine_id
        try:
            with anyio.fail_after(max(held.deadline - time.time(), 0.001)):
                body = await collect(held.ticket, watch)
        except TimeoutError:
            if not held.ticket.delivered:
                watch.stop()
                await destroy(runtime, plan.app, machine_id)
                await _close(held)
                timeout = CallTimeoutError(
                    f"call {held.call_id} did not finish within"
                    f" timeout_s={plan.options.effective_timeout_s:g};"
                    f" machine {machine_id} was destroyed"
                )
                self._attempt_failed(held, tag(timeout, held.call_id, machine_id))
                return None
            body = await held.ticket.result()  # delivered as the deadline struck: kept
        if body is None:
            await _close(held)
            error = await exit_error(runtime, plan.app, machine_id, plan.options)
            self._attempt_failed(held, tag(error, held.call_id, machine_id))
            return None
        job.machine = None
        if job.state is not None:
            job.state.timings.result_at = time.time()
            try:
                value = await outcome(runtime, plan, body, held.call_id, machine_id)
            except Exception as exc:
                self._attempt_failed(held, exc)
            else:
                job.settle(value)
        return await self._next(held, machine)

    async def _next(self, held: _Held, machine: _Machine) -> _Held | None:
        """Answer the held delivery with the machine's next call, or with no more work."""
        ticket = held.ticket
        assert isinstance(ticket, Ticket)  # pools use the inbox (checked per call)
        job = None if self.closed else await self._next_job()
        if job is None and not self.closed and self._count <= self.pool.min:
            job = self._keep_warm_job(held.job.plan)
        if job is None:
            machine.counted = False
            self._count -= 1
            ticket.reply(None)
            await _close(held)
            return None
        next_held = self._hand(job, creating=False)
        self._started(next_held, machine, created_now=False)
        ticket.reply(self._payload(next_held))
        ticket.close()
        return next_held

    def _attempt_failed(self, held: _Held, error: BaseException) -> None:
        """An attempt failed: queue the call again (within ``retries``), or settle its error."""
        job, options = held.job, held.job.plan.options
        job.machine = None
        if job.state is None or job.done.is_set():
            return  # a keep-warm call, or one the caller abandoned
        if job.attempts <= options.retries and retryable(error, options) and not self.closed:
            logger.info("%s failed (%s); retrying on another machine", held.call_id, error)
            delay_s = retry_delay_s(error, job.attempts)
            if delay_s > 0:
                self.runtime.background(functools.partial(self._resubmit_later, job, delay_s))
            else:
                self._submit(job, first=True)
            return
        note_attempts(error, job.attempts)
        job.settle(error=error)

    async def _resubmit_later(self, job: _Job, delay_s: float) -> None:
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
        for parked in list(self._parked):
            parked.event.set()
        for machine in list(self._machines):
            machine.scope.cancel()
        with anyio.move_on_after(_SHUTDOWN_WAIT_S):
            await self._all_gone.wait()


async def _close(held: _Held) -> None:
    with anyio.CancelScope(shield=True):
        await close_ticket(held.ticket)


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


def shutdown_pool(pool: Pool) -> None:
    """Destroy the pool's machines (from any thread but the runtime's)."""
    runner = pool._runner
    if not isinstance(runner, PoolRunner) or runner.runtime is not current_runtime():
        return  # never used, or its runtime has ended (and destroyed its machines)
    runner.runtime.portal.call(runner.shutdown)
