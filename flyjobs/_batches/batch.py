"""A batch's machines: created at the create rate, each pulling inputs until the work runs out.

Up to ``max_machines`` ephemeral machines (``auto_destroy``, never restarted) run a batch. Each
is created with its first input in ``files[].raw_value``; when it delivers a result to the inbox,
the same round trip answers with its next input, taken from the batch's `WorkSource` (the FLAME
pattern within one batch). A machine exits when the batch has no work left for it, or after
`NEXT_INPUT_WAIT_S` without any. With ``reuse=False`` each machine takes one input.

Small, fast inputs go several per round trip: the answer hands a chunk of inputs
(`flyjobs._wire.bulk`; how many: `flyjobs._batches.chunking`), each with its own ticket and
clocks, and their results come back in one bulk. Inputs a machine gives back unrun (one ahead
of them ran long) go to the next machine without counting an attempt; when a machine dies
holding a chunk, which input killed it is unknown, so none is charged and each of them runs
alone from then on.

When results go through the object store, machines cannot pull from the caller: each is created
with a fixed slice of inputs instead (``then`` in its payload, at most `MAX_SLICE` and
`MAX_INLINE_PAYLOAD_BYTES` of arguments), runs them in order and PUTs each result to its own
presigned URL. The client reads them once the machine has exited; an input whose result is
missing failed with the machine's exit (and is retried under ``retries``), and the inputs after
it, which never ran, are given back without counting an attempt.

Each input's clocks (deadline, result URL expiry) start when a machine is created for it or
handed it: a create the API throttles (429) is sent again, however long that lasts, with the
clocks of the inputs it carries started anew. A machine that dies holding an input gives the
input back for another machine (within ``retries``); a result is taken from a ticket only once,
and a ticket is closed before its input is retried, so no input's result is delivered twice.
However the batch ends (done, cancelled, failed, interpreter exit), every machine it created is
destroyed or exiting by itself, watched until it has.

With ``standby``, the batch first claims free standby machines of its shape (`flyjobs._standby`)
under their leases, up to the machines it may run, and starts one for each input it hands out
(each as soon as its lease is held) before it creates any machine: standbys need no turn of
the create rate. However the batch
ends, each is stopped, reset and released (`MachineRun.destroy` gives a claimed run back), and
claims it never started are released.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from .._aio.sole_error import sole_error
from .._calls.attempt import (
    EXIT_GRACE_S,
    Attempt,
    MachineRun,
    Retry,
    check_secrets,
    pace_create,
    settle_runs,
    show_output,
    spilled_key,
    value_of,
)
from .._calls.plan import MAX_INLINE_PAYLOAD_BYTES, Plan
from .._calls.runtime import Runtime
from .._cost.budget import Budget
from .._cost.ledger import Ledger, Share
from .._exceptions import BudgetExceededError, FlyjobsError, TooManyFailuresError
from .._standby.claim import Claim, claim_standbys
from .._wire.bulk import encode_chunk
from .._wire.machine import NEXT_INPUT_WAIT_S
from .._wire.metadata import META_BATCH_ID
from .._wire.result_envelope import decode_result
from .chunking import MAX_CHUNK_BYTES, ChunkSize
from .progress import BatchStats
from .work import Input, Item, Outcome, Outcomes, Recorder, WorkSource

__all__ = ("MAX_SLICE", "Batch")

#: Most inputs one machine takes at creation when results go through the object store.
MAX_SLICE = 64
#: Machines that ended whose events are read together, in the background (without a cap;
#: see `Batch._settle`), and the most seconds the first of them waits for the others.
_SETTLE_EVERY = 256
_SETTLE_AFTER_S = 30.0

logger = logging.getLogger("flyjobs.batch")


@dataclasses.dataclass(eq=False)
class _Held:
    """The input a machine holds, and its attempt."""

    item: Item
    attempt: Attempt
    #: the rest of the machine's fixed slice (object store), or of the chunk it was handed
    #: with (inbox), run after this input
    following: list[_Held] = dataclasses.field(default_factory=list)
    #: the round trip it was handed in (alone or with others), when it was pulled
    chunk: _Chunk | None = None
    #: its machine gave it back unrun (see `flyjobs._wire.bulk`)
    returned: bool = False
    #: its part of its machine's cost, once on a machine
    share: Share | None = None

    def on(self, run: MachineRun) -> None:
        """The input is on ``run``'s machine from now: its share of the machine's cost."""
        if run.cost is not None:
            self.share = run.cost.share()
            self.item.shares.append(self.share)

    def ended(self, *, failed: bool) -> None:
        if self.share is not None:
            self.share.end(failed=failed)

    @property
    def call_id(self) -> str:
        return self.attempt.call_id


@dataclasses.dataclass(eq=False)
class _Chunk:
    """Inputs handed to a machine in one round trip (see `flyjobs._batches.chunking`)."""

    count: int
    #: monotonic seconds it was handed out
    handed_at: float
    #: seconds its functions ran, as their results say
    run_s: float = 0.0
    #: its machine gave some of it back
    returned: bool = False


class Batch:
    """Runs one batch on the runtime's loop (`run`); see the module docstring.

    :param max_machines: machines of this batch at once (the runtime's pool bounds all calls
        of the process as well).
    :param reuse: machines take more than one input.
    :param max_failures: stop after this many failed inputs (None: never stop).
    :param ledger: where the machines' costs are kept (`flyjobs._cost.ledger`).
    :param max_cost_usd: the batch's cap (`flyjobs._cost.budget`); None: no cap.
    :param standby: claim free standby machines of the batch's shape before creating any.
    """

    def __init__(
        self,
        runtime: Runtime,
        plan: Plan,
        inputs: Iterator[Input],
        outcomes: Outcomes,
        *,
        max_machines: int,
        reuse: bool,
        max_failures: int | None,
        window: int,
        total_hint: int | None = None,
        journal: Recorder | None = None,
        ledger: Ledger | None = None,
        max_cost_usd: float | None = None,
        standby: bool = False,
    ) -> None:
        self._journal = journal
        self._standby = standby
        self._claims: list[Claim] = []
        #: set when no more claims will come (at once without ``standby``)
        self._claimed = anyio.Event()
        self._claim_came = anyio.Event()
        if not standby:
            self._claimed.set()
        # Standbys to claim: no more than can run at once (this batch's and the process's
        # bound), nor than there are inputs.
        self._want = min(max_machines, runtime.settings.max_machines, total_hint or max_machines)
        self._runtime = runtime
        self._plan = plan
        self._outcomes = outcomes
        self.ledger = ledger
        self.stats = BatchStats(total_hint, ledger)
        self.source = WorkSource(
            inputs,
            partial(plan.encode, spill=runtime.channel.spills),
            window=window,
            wake=self._wake,
            on_read=lambda _index: self.stats.input_read(),
            on_reject=self._encode_failed,
            on_end=self._inputs_ended,
            lookup=journal.lookup if journal is not None else None,
            on_recorded=self._recorded,
            held_bytes=lambda: outcomes.held_bytes,
        )
        self._source = self.source
        self._slots = anyio.CapacityLimiter(max_machines)
        self._reuse = reuse
        # Machines pull their next input over the inbox; through the store they cannot, and
        # take a fixed slice when they are created instead.
        self._pulls = reuse and runtime.channel.pulls
        self._slice = 1
        if reuse and not self._pulls:
            share = -(-total_hint // max_machines) if total_hint else 8
            self._slice = max(1, min(MAX_SLICE, share))
        self._retry = Retry(plan.options)
        self._max_failures = max_failures
        self._failures: list[tuple[int, BaseException]] = []
        self._machine_numbers = itertools.count()
        self._hinted = False
        self._chunk_size = ChunkSize()
        #: inputs handed in chunks whose results are not in, by call id
        self._chunked: dict[str, _Held] = {}
        #: indexes of inputs handed alone from now on: their chunk's machine died
        self._solo: set[int] = set()
        self._budget: Budget | None = None
        self._over_budget: BudgetExceededError | None = None
        #: every outcome so far, for a BudgetExceededError (only with a cap)
        self._so_far: list[Outcome[Any]] = []
        #: machines being billed from their events, in the background (see `settled`)
        self._settling: set[anyio.Event] = set()
        #: machines that ended, not billed yet, and when the first of them ended (monotonic)
        self._ended: list[MachineRun] = []
        self._ended_since = 0.0
        if max_cost_usd is not None and ledger is not None:
            self._budget = Budget(
                max_cost_usd,
                ledger,
                usd_per_s=ledger.price_of(plan.options.guest(), plan.options.region),
                hold_s=plan.options.effective_timeout_s + EXIT_GRACE_S,
            )

    async def run(self) -> None:
        """Run the batch to its end; cancelling it destroys every machine it made."""
        try:
            await check_secrets(self._runtime, self._plan)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self._standby:
                    tg.start_soon(self._claim_standbys)
                self._source.start(tg)
                while True:
                    holder = object()
                    await self._slots.acquire_on_behalf_of(holder)
                    try:
                        await self._runtime.limiter.acquire_on_behalf_of(holder)
                    except BaseException:
                        self._slots.release_on_behalf_of(holder)
                        raise
                    claim = await self._next_claim()
                    if claim is None and self._over_budget is None:
                        # The create's turn first, then the input: an input is not held back
                        # from the machines already running while its create waits for the
                        # rate limit.
                        await pace_create(self._runtime, self._plan.app)
                    reserved = await self._reserve()
                    item = await self._source.take()
                    if item is None or not reserved:
                        if claim is not None:
                            self._claims.append(claim)
                        self._release(holder)
                    if item is None:
                        if self._budget is not None and reserved:
                            self._budget.release(self._slice)
                        break
                    if not reserved:
                        self._refuse(item)
                        continue
                    tg.start_soon(self._machine, item, holder, claim)
        except Exception as exc:
            self._outcomes.abort(sole_error(exc))
        finally:
            while self._claims:
                await self._claims.pop().release()
            self._source.close()
            self.stats.finished()
            self._sweep()

    async def _reserve(self) -> bool:
        """Whether the next machine fits the budget (reserved if so; True without a cap).
        While machines run, it waits for one to end before it says no."""
        budget = self._budget
        if budget is None:
            return True
        while self._over_budget is None:
            if budget.reserve_machine(self._slice):
                return True
            if not budget.running:
                self._over_budget = BudgetExceededError(
                    f"batch {self._plan.batch_id} stopped before max_cost_usd="
                    f"{budget.max_usd:g}: it spent ${self._spent_usd():.4f}, and another"
                    f" machine could cost up to its timeout_s and exit grace more; raise"
                    " max_cost_usd or lower timeout_s",
                    max_cost_usd=budget.max_usd,
                    spent_usd=self._spent_usd(),
                    outcomes=self._so_far,
                )
                break
            await budget.wait_changed()
        return False

    def _spent_usd(self) -> float:
        ledger = self.ledger
        return 0.0 if ledger is None else ledger.usd + ledger.earlier_usd

    def _refuse(self, item: Item) -> None:
        """Over budget: ``item`` is not run; it ends with the batch's `BudgetExceededError`."""
        error = self._over_budget
        if error is None:
            raise AssertionError("refused only over budget")
        self.stats.failed += 1
        self._source.finished(item)
        self._put(Outcome(item.index, False, error, item.attempts, shares=tuple(item.shares)))

    def _put(self, outcome: Outcome[Any], size: int = 0) -> None:
        if self._budget is not None:
            self._so_far.append(outcome)
        self._outcomes.put(outcome, size)

    async def _claim_standbys(self) -> None:
        """Claim free standbys of the batch's shape, up to the machines it may run, each
        handed to the batch as soon as its lease is held, and keep their leases alive until
        each is given back."""
        runtime, plan = self._runtime, self._plan

        def came(claim: Claim) -> None:
            self._claims.append(claim)
            runtime.background(claim.keep)
            self._claim_came.set()

        try:
            await claim_standbys(
                runtime.client,
                plan.app,
                plan.options,
                image=plan.image,
                want=self._want,
                description=f"flyjobs batch {plan.batch_id}",
                on_claim=came,
            )
        finally:
            self._claimed.set()
            self._claim_came.set()

    async def _next_claim(self) -> Claim | None:
        """A claimed standby for the next machine: one held now, or the next to come while
        claims are still being made; None once there are no more."""
        while not self._claims and not self._claimed.is_set():
            self._claim_came = anyio.Event()
            await self._claim_came.wait()
        return self._claims.pop() if self._claims else None

    def _inputs_ended(self, total: int, error: BaseException | None) -> None:
        self.stats.inputs_ended()
        self._outcomes.end(total, error)

    def _wake(self, fn: Callable[[], None]) -> None:
        # From the caller's thread: run fn on the runtime's loop, without waiting for it.
        self._runtime.portal.start_task_soon(_call_async, fn)

    def _recorded(self, index: int, value: Any) -> None:
        # A resumed batch's input that returned in an earlier run: its value, not run again.
        self.stats.done += 1
        self._put(Outcome(index, True, value))

    def _encode_failed(self, index: int, error: BaseException) -> None:
        self.stats.failed += 1
        self.rejected(Outcome(index, False, error))

    def _release(self, holder: object) -> None:
        self._runtime.limiter.release_on_behalf_of(holder)
        self._slots.release_on_behalf_of(holder)

    # --- one machine ------------------------------------------------------------------

    async def _hand(self, item: Item, *, creating: bool, queue: int = 0) -> _Held:
        """Start ``item``'s clocks and open its ticket (putting arguments too large to travel
        inline in the store, the first time). ``queue`` inputs run before it on its machine
        (in a fixed slice), so its deadline is that many ``timeout_s`` later."""
        item.attempts += 1
        call_id = f"{self._plan.batch_id}-{item.index}"
        if item.attempts > 1:
            call_id += f"-r{item.attempts - 1}"
        held = await self._start_clocks(item, call_id, queue, upload=item.attempts == 1)
        self.stats.started(item.index, item.queued_at, creating=creating)
        return held

    async def _start_clocks(
        self, item: Item, call_id: str, queue: int, *, upload: bool = False
    ) -> _Held:
        """``item`` held as ``call_id``, its clocks started (``upload``: put its arguments in
        the store first, when they spill)."""
        if upload and self._plan.spilled(item.arguments):
            await self._runtime.channel.put_arguments(self._args_key(item), item.arguments)
        return _Held(item, self._open(item, call_id, queue))

    def _open(self, item: Item, call_id: str, queue: int) -> Attempt:
        return Attempt.open(
            self._runtime,
            self._plan,
            call_id,
            item.arguments,
            args_key=self._args_key(item),
            queue=queue,
            replies=self._pulls,
            on_late=self.stats.late_delivery,
            on_returned=self._returned if self._pulls else None,
        )

    def _args_key(self, item: Item) -> str:
        return spilled_key(f"{self._plan.batch_id}-{item.index}")

    async def _restart_clocks(self, first: _Held) -> tuple[bytes, float]:
        """After a throttled create: the inputs it was to carry were not taken, so their
        clocks start again (new deadlines and tickets); the create's new payload and
        deadline."""
        for queue, held in enumerate((first, *first.following)):
            await held.attempt.close()
            fresh = self._open(held.item, held.call_id, queue)
            fresh.ticket.polls = held.attempt.ticket.polls
            held.attempt = fresh
        return self._payload(first), first.attempt.deadline

    def _payload(self, held: _Held) -> bytes:
        return held.attempt.payload(
            self._plan,
            held.item.arguments,
            pulls=self._pulls,
            then=[self._payload(after) for after in held.following],
        )

    async def _take_slice(self, first: _Held) -> None:
        """Give the machine about to be created for ``first`` the inputs that follow it in
        its fixed slice: those ready now, up to `MAX_SLICE` and the inline payload limit."""
        size = 0 if self._plan.spilled(first.item.arguments) else len(first.item.arguments)
        while len(first.following) + 1 < self._slice and size <= MAX_INLINE_PAYLOAD_BYTES:
            item = await self._source.take(timeout_s=0)
            if item is None:
                break
            held = await self._hand(item, creating=True, queue=len(first.following) + 1)
            first.following.append(held)
            if held.attempt.arguments_url is None:
                size += len(item.arguments)
        for held in (first, *first.following) if first.following else ():
            # The machine exits only after its whole slice: look for each result while it
            # runs, so values reach the caller (and a journal) as they come.
            held.attempt.ticket.polls = True

    async def _machine(self, item: Item, holder: object | None, claim: Claim | None) -> None:
        plan, runtime = self._plan, self._runtime
        held: _Held | None = None
        run: MachineRun | None = None
        slice_: list[_Held] = []
        try:
            first = held = await self._hand(item, creating=True)
            if self._slice > 1:
                await self._take_slice(first)
                slice_ = first.following
            try:
                run = await self._start(first, claim)
            except Exception as exc:
                self._create_failed()
                held = None
                await first.attempt.close()
                self._attempt_failed(first, exc)
                return
            self._created(run, first)
            while held is not None:
                held = await self._serve(held, run)
            # The machine is told there is no more work: it exits by itself, and its place in
            # the pool goes to the next. The batch still owns it until it has exited
            # (destroying it if it lingers), so that a batch that is over leaves no machine.
            self._release(holder)
            holder = None
            await run.finish()
        except BaseException:
            # Cancelled (the batch is over), or a failure of our own: the machine goes now.
            if run is not None:
                await run.destroy()
            raise
        finally:
            if held is not None:
                await held.attempt.close()
                for each in held.following if held.chunk is not None else ():
                    await each.attempt.close()  # the batch is over: the rest of the chunk too
            for never_ran in slice_:
                # The slice's inputs after one that failed (or all, if the create failed).
                await never_ran.attempt.close()
                never_ran.item.attempts -= 1
                self.stats.settled(never_ran.item.index, "retried")
                self._source.give_back(never_ran.item)
            if run is not None:
                runtime.live.forget(plan.app, run.id)
                await self._settle(run)
            elif claim is not None:
                await claim.release()  # never started (or already given back)
            if holder is not None:
                self._release(holder)

    def _create_failed(self) -> None:
        if self._budget is not None:
            self._budget.release(self._slice)
        self.stats.create_failed()

    def _created(self, run: MachineRun, first: _Held) -> None:
        if self._budget is not None and run.cost is not None:
            self._budget.created(run.cost, self._slice)
        first.on(run)
        self.stats.created(first.item.index)
        self._watch(run.id, first.call_id)

    async def _settle(self, run: MachineRun) -> None:
        """Bill the machine, which has exited (or was destroyed), from its own events, in the
        background: reading them never delays an input. Under a cap at once (the budget
        waits for it); else a few dozen at a time, or half a minute after the first ended,
        or when the batch ends (until then its cost is estimated: `settled` waits for it)."""
        if run.cost is None:
            return
        if not self._ended:
            self._ended_since = anyio.current_time()
        self._ended.append(run)
        if (
            self._budget is not None
            or len(self._ended) >= _SETTLE_EVERY
            or anyio.current_time() - self._ended_since > _SETTLE_AFTER_S
        ):
            self._sweep()

    def _sweep(self) -> None:
        """Read the events of the machines that ended, in the background."""
        runs, self._ended = self._ended, []
        if not runs:
            return
        done = anyio.Event()
        self._settling.add(done)

        async def settle() -> None:
            try:
                batch_id = self._plan.batch_id or ""
                await settle_runs(self._runtime, self._plan.app, runs, {META_BATCH_ID: batch_id})
            finally:
                self._settling.discard(done)
                done.set()
                if self._budget is not None:
                    self._budget.changed()

        self._runtime.background(settle)

    async def settled(self) -> None:
        """Bill every machine that has ended from its events, and wait until they are (each
        waits a bounded time for its machine to be readable)."""
        self._sweep()
        for done in list(self._settling):
            await done.wait()

    async def _start(self, first: _Held, claim: Claim | None) -> MachineRun:
        """Create the machine that takes ``first`` (and what follows it in its slice or
        chunk), or start the claimed standby ``claim`` with it."""
        plan, runtime = self._plan, self._runtime
        if claim is not None:
            payload, deadline = self._payload(first), first.attempt.deadline
            return await MachineRun.start_claimed(
                runtime, plan, claim, payload, deadline, pulls=self._reuse, ledger=self.ledger
            )
        name = first.call_id
        if self._reuse:
            name = f"{plan.batch_id}-m{next(self._machine_numbers)}"
        return await MachineRun.create(
            runtime,
            plan,
            name,
            self._payload(first),
            first.attempt.deadline,
            pulls=self._reuse,
            paced=True,
            restart=partial(self._restart_clocks, first),
            ledger=self.ledger,
        )

    async def _serve(self, held: _Held, run: MachineRun) -> _Held | None:
        """Wait for the held input's result (or the machine's end); return the next input
        handed to the machine, if any."""
        runtime, plan, machine_id = self._runtime, self._plan, run.id
        if held.attempt.ticket.delivered:
            body: bytes | FlyjobsError = await held.attempt.ticket.result()  # a chunk's: no wait
        else:
            body = await run.result(held.attempt)
        self._chunked.pop(held.call_id, None)
        if not isinstance(body, bytes):
            await held.attempt.close()
            if held.chunk is not None and any(not each.returned for each in held.following):
                self._chunk_lost(held)
            else:
                self._attempt_failed(held, body)
            return None
        result = decode_result(body)
        if held.chunk is not None:
            start, end = result.timings.get("function_start"), result.timings.get("function_end")
            if start is not None and end is not None:
                held.chunk.run_s += max(end - start, 0.0)
        self.stats.delivered(held.item.index, result.timings)
        if await show_output(runtime, plan, machine_id, held.call_id, result):
            self._hint_output()
        try:
            value = value_of(result, plan, held.call_id, machine_id)
        except Exception as exc:
            self._attempt_failed(held, exc)
            if result.error is not None and result.error.stage == "import":
                return await self._stop(held)  # the next input would fail the same way
        else:
            if self._journal is not None:
                # Recorded before the machine gets more work: a kill loses only what runs.
                await anyio.to_thread.run_sync(self._journal.record, held.item.arguments, value)
            self._succeeded(held, value, len(body))
        return await self._next(held, run)

    async def _next(self, held: _Held, run: MachineRun) -> _Held | None:
        """Answer the held delivery with the machine's next input (or no more work)."""
        while held.following and held.following[0].returned:
            await held.following.pop(0).attempt.close()  # given back already
        machine_id = run.id
        if held.following:
            # The next input of the machine's fixed slice or chunk: it is running it already.
            await held.attempt.close()
            next_held = held.following.pop(0)
            next_held.following = held.following
            next_held.on(run)
            self._watch(machine_id, next_held.call_id)
            return next_held
        if held.chunk is not None:
            chunk = held.chunk
            round_trip_s = time.monotonic() - chunk.handed_at
            self._chunk_size.observe(
                chunk.count, chunk.run_s, round_trip_s, returned=chunk.returned
            )
        if not self._pulls:
            return await self._stop(held)
        if self._budget is not None and (
            self._over_budget is not None or run.cost is None or not self._budget.more(run.cost)
        ):
            return await self._stop(held)  # another input could cross the cap
        item = await self._source.take(timeout_s=NEXT_INPUT_WAIT_S)
        if item is None:
            return await self._stop(held)
        chunk_ = await self._take_chunk(item)
        next_held = chunk_[0]
        next_held.on(run)
        self._watch(machine_id, next_held.call_id)
        if len(chunk_) == 1:
            held.attempt.ticket.reply(self._payload(next_held))
        else:
            held.attempt.ticket.reply(encode_chunk([self._payload(each) for each in chunk_]))
        await held.attempt.close()
        return next_held

    async def _take_chunk(self, item: Item) -> list[_Held]:
        """``item`` and the inputs ready now to go with it, handed (clocks started): as many
        as the chunk size says, within `MAX_CHUNK_BYTES` (see `flyjobs._batches.chunking`)."""
        items = [item]
        size = len(item.arguments)
        while item.index not in self._solo and len(items) < self._chunk_size.size:
            more = await self._source.take(timeout_s=0)
            if more is None:
                break
            if more.index in self._solo or size + len(more.arguments) > MAX_CHUNK_BYTES:
                self._source.give_back(more)
                break
            items.append(more)
            size += len(more.arguments)
        # Each input's clocks start with the chunk: `timeout_s` is its own, not stretched by
        # the inputs ahead of it (together they run about TARGET_RUN_S, and one that runs
        # longer than CHUNK_HOLD_S makes the machine give the rest back).
        helds = [await self._hand(each, creating=False) for each in items]
        chunk = _Chunk(len(helds), time.monotonic())
        for held in helds:
            held.chunk = chunk
            if len(helds) > 1:
                self._chunked[held.call_id] = held
        helds[0].following = helds[1:]
        return helds

    def _returned(self, call_id: str) -> None:
        """A machine gave back an input of its chunk unrun (the inbox closed its ticket): it
        goes to the next machine that takes one, without counting an attempt."""
        held = self._chunked.pop(call_id, None)
        if held is None:
            return
        held.returned = True
        if held.chunk is not None:
            held.chunk.returned = True
        held.item.attempts -= 1
        self.stats.settled(held.item.index, "retried")
        self._source.give_back(held.item)

    def _chunk_lost(self, held: _Held) -> None:
        """The machine died running ``held``'s chunk: which input killed it is unknown, so none
        is charged an attempt, and each runs alone from now on (a second death is its own)."""
        for each in (held, *held.following):
            self._chunked.pop(each.call_id, None)
            if not each.returned:
                each.returned = True
                self._solo.add(each.item.index)
                each.item.attempts -= 1
                self.stats.settled(each.item.index, "retried")
                self._source.give_back(each.item)
        for each in held.following:
            self._runtime.background(each.attempt.close)
        held.following.clear()

    def _watch(self, machine_id: str, call_id: str) -> None:
        """Show what the machine prints, as ``call_id``'s, from now on (``output="live"``)."""
        if self._plan.output == "live":
            batch_id = self._plan.batch_id or ""
            self._runtime.live.watch(self._plan.app, machine_id, call_id, batch_id=batch_id)

    def _hint_output(self) -> None:
        """Once per batch: say that inputs printed lines not shown, and how to see them."""
        if self._hinted or self._plan.output != "errors":
            return
        self._hinted = True
        batch_id = self._plan.batch_id
        how = (
            'output="live" shows every line'
            if self._runtime.settings.embedded  # its logs end with this process
            else f"every line: flyjobs logs {batch_id}"
        )
        sys.stderr.write(
            f"[{batch_id}] lines printed by inputs that succeed are not shown"
            f' (output="errors"); {how}\n'
        )
        sys.stderr.flush()

    async def _stop(self, held: _Held) -> _Held | None:
        """Answer the held delivery with "no more work"; the machine exits."""
        held.attempt.ticket.reply(None)
        await held.attempt.close()
        return None

    # --- outcomes -----------------------------------------------------------------------

    def _succeeded(self, held: _Held, value: Any, size: int) -> None:
        item = held.item
        held.ended(failed=False)
        timings = self.stats.settled(item.index, "done")
        outcome = Outcome(
            item.index, True, value, item.attempts, held.call_id, timings, tuple(item.shares)
        )
        self._put(outcome, size)
        self._source.finished(item)
        self._forget_arguments(held)

    def _forget_arguments(self, held: _Held) -> None:
        if held.attempt.arguments_url is not None:
            key = self._args_key(held.item)
            self._runtime.background(partial(self._runtime.channel.discard_arguments, key))

    def _attempt_failed(self, held: _Held, error: BaseException) -> None:
        """An attempt of ``held``'s input failed: retry it elsewhere, or record its error."""
        item = held.item
        held.ended(failed=True)
        delay_s = self._retry.again(error, item.attempts)
        if delay_s is not None:
            self.stats.settled(item.index, "retried")
            logger.info("%s failed (%s); retrying", held.call_id, error)
            if delay_s > 0:
                self._tg.start_soon(self._give_back_later, item, delay_s)
            else:
                self._source.give_back(item)
            return
        timings = self.stats.settled(item.index, "failed")
        self._source.finished(item)
        self._forget_arguments(held)
        self.rejected(
            Outcome(
                item.index,
                False,
                error,
                item.attempts,
                held.call_id,
                timings,
                tuple(item.shares),
            )
        )

    def rejected(self, outcome: Outcome[Any]) -> None:
        """An input failed for good (an attempt, or its encoding): record its error, and stop
        the batch at ``max_failures``."""
        index, error = outcome.index, outcome.value
        self._failures.append((index, error))
        self._put(outcome)
        if self._max_failures is not None and len(self._failures) >= self._max_failures:
            self._outcomes.abort(
                TooManyFailuresError(
                    f"{len(self._failures)} inputs failed (max_failures={self._max_failures});"
                    " the rest were cancelled and their machines destroyed. First failure:"
                    f" input {self._failures[0][0]}: {type(self._failures[0][1]).__name__}:"
                    f" {self._failures[0][1]}",
                    list(self._failures),
                )
            )
            self._tg.cancel_scope.cancel()

    async def _give_back_later(self, item: Item, delay_s: float) -> None:
        await anyio.sleep(delay_s)
        self._source.give_back(item)


async def _call_async(fn: Callable[[], None]) -> None:
    fn()
