"""A batch's machines: created at the create rate, each pulling inputs until the work runs out.

Up to ``max_machines`` ephemeral machines (``auto_destroy``, never restarted) run a batch. Each
is created with its first input in ``files[].raw_value``; when it delivers a result to the inbox,
the same round trip answers with its next input, taken from the batch's `WorkSource` (the FLAME
pattern within one batch). A machine exits when the batch has no work left for it, or after
`NEXT_INPUT_WAIT_S` without any. With ``reuse=False`` each machine takes one input. A machine
beyond the first few is created only while the machines running could not finish the inputs
waiting before it booted (`flyjobs._batches.width`): a thousand quick inputs take a few
machines, not ``max_machines``.

Small, fast inputs go several per round trip: the answer hands a chunk of inputs
(`flyjobs._wire.bulk`; how many: `flyjobs._batches.chunking`), each with its own ticket and
clocks, and their results come back in one bulk. Inputs a machine gives back unrun (one ahead
of them ran long) go to the next machine without counting an attempt; when a machine dies
holding a chunk, which input killed it is unknown, so none is charged and each of them runs
alone from then on.

When results go through the object store, machines cannot pull from the caller: each is created
with a first chunk of inputs (``then`` in its payload, at most `MAX_SLICE` and
`MAX_INLINE_PAYLOAD_BYTES` of arguments), runs them in order and PUTs each result to its own
presigned URL, where the client looks for it while the machine runs (one listing for all
machines: again at once while results come in, else every `RESULT_POLL_MAX_S` at most; see
`flyjobs._batches.result_polls`). It then reads its next chunk from the store
(`flyjobs._wire.chunk`, objects written through `flyjobs._results.chunks.ChunkFeed`): the client
writes each machine's next chunk while it still runs the one before (so a machine rarely waits),
sized to about `CHUNK_WORK_S` of work and to the machine's even share of the inputs not done
(`flyjobs._batches.chunking.store_share`), and "no more work" once there is none. A chunk is
only written while the machine is surely still waiting for it (it was seen busy less than
`NEXT_INPUT_WAIT_S` - `_CHUNK_MARGIN_S` ago), so every chunk written is read. Without a result
key (nothing to seal chunks with) a machine takes only its first chunk. An input whose result is
missing when its machine exits failed with it (and is retried under ``retries``); the inputs
after it, which never ran, are given back without counting an attempt.

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

import contextlib
import dataclasses
import itertools
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import anyio
import anyio.abc
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
from .._calls.plan import MAX_INLINE_PAYLOAD_BYTES, WORKER_DEADLINE_SLACK_S, Plan
from .._calls.runtime import Runtime
from .._cost.budget import Budget
from .._cost.ledger import Ledger, Share
from .._exceptions import (
    BudgetExceededError,
    FlyjobsError,
    MachineCrashedError,
    TooManyFailuresError,
    TransportError,
)
from .._results.chunks import ChunkFeed
from .._standby.claim import Claim, claim_standbys
from .._trace.spans import start_batch
from .._wire.bulk import encode_chunk
from .._wire.log_lines import call_mark
from .._wire.machine import NEXT_INPUT_WAIT_S
from .._wire.metadata import META_BATCH_ID
from .chunking import INPUT_COST_S, MAX_CHUNK_BYTES, ChunkSize, store_share
from .progress import BatchStats
from .result_polls import RESULT_POLL_MAX_S, ResultPolls
from .width import Gauge, Width
from .work import Input, Item, Outcome, Outcomes, Recorder, WorkSource

__all__ = ("CHUNK_WORK_S", "MAX_SLICE", "RESULT_POLL_MAX_S", "Batch")

#: Most inputs in a machine's first chunk (in its payload) when results go through the object
#: store.
MAX_SLICE = 64
#: Most inputs in a next chunk (an object the machine reads from the store): a chunk costs a
#: look at the store's results and a write before the next, a tenth of a second or so, which
#: many quick inputs share.
_MAX_STORE_CHUNK = 512
#: Most inputs read ahead (taken and not yet consumed by the caller) when machines read their
#: chunks from the store: several large chunks in flight at once (bounded memory all the same).
_STORE_WINDOW = 1024
#: Seconds ahead an input's deadline may be (``timeout_s`` per input queued before it on its
#: machine): its URLs are presigned until then, and S3 refuses signatures of over 7 days.
_QUEUE_HORIZON_S = 6 * 24 * 3600.0
#: Seconds of work (by the batch's mean run time so far) a chunk holds, when the store carries
#: results: long enough that writing the next chunk costs little, short enough that the last
#: chunks spread over the machines.
CHUNK_WORK_S = 1.0
#: Inputs in a machine's first chunk before any input has run (the run time is not known yet).
_FIRST_CHUNK = 8
#: Results read from the store at once.
_CONCURRENT_READS = 16
#: Seconds of its idle period a machine surely has left when its next chunk is written (the
#: write and its visibility in the store fit in them).
_CHUNK_MARGIN_S = 2.0
#: Seconds a chunk waits for the lazy reader to read more inputs to fill it.
_FILL_S = 0.2
#: Seconds a chunk object's URL stays valid past the deadline of its chunk's last input.
_CHUNK_URL_SLACK_S = 60.0
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
    #: the rest of the machine's slice or chunks (object store), or of the chunk it was
    #: handed with (inbox), run after this input
    following: list[_Held] = dataclasses.field(default_factory=list)
    #: the round trip it was handed in (alone or with others), when it was pulled
    chunk: _Chunk | None = None
    #: its machine gave it back unrun (see `flyjobs._wire.bulk`)
    returned: bool = False
    #: the machine's chunks in the store (object store with a result key only)
    feed: _Feed | None = None
    #: the key of the chunk object this input came in (deleted once a result of it is in)
    chunk_key: str | None = None
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


@dataclasses.dataclass(eq=False)
class _Feed:
    """A store-mode machine's chunks: their objects, and the inputs written for it and not yet
    delivered (``queue``, the ``following`` list of the input it holds)."""

    chunks: ChunkFeed
    queue: list[_Held]
    #: unix time (s) at which the machine was surely not yet waiting for its next chunk
    busy_at: float
    #: the last input written for it (the machine is busy while its result is not in)
    last: _Held
    #: no chunk will be written any more ("no more work" was, or writing failed)
    ended: bool = False
    changed: anyio.Event = dataclasses.field(default_factory=anyio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


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
        #: set when the batch's width may have changed (`_until_wider`)
        self._width_event = anyio.Event()
        # Through the store, machines read their next chunks there (when chunks can be
        # sealed): more inputs in flight make up for each chunk's round trip.
        self._feeds = reuse and not runtime.channel.pulls and runtime.channel.feeds
        if self._feeds:
            window = max(window, _STORE_WINDOW)
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
            on_change=self._width_changed,
        )
        self._source = self.source
        self._slots = anyio.CapacityLimiter(max_machines)
        self._reuse = reuse
        # Machines pull their next input over the inbox; through the store they cannot, and
        # take a fixed slice when they are created instead.
        self._pulls = reuse and runtime.channel.pulls
        self._max_machines = max_machines
        self._window = window
        #: inputs machines hold through the store, by call id, whose results are looked for
        self._watched: dict[str, _Held] = {}
        self._reads = anyio.CapacityLimiter(_CONCURRENT_READS)
        #: machines not finished yet, and whether the batch creates no more (the results of
        #: the store are looked for until both say it is over)
        self._machines_left = 0
        self._created_all = False
        self._slice = 1
        if reuse and not self._pulls:
            share = -(-total_hint // max_machines) if total_hint else _FIRST_CHUNK
            self._slice = max(1, min(MAX_SLICE, share))
        self._retry = Retry(plan.options)
        self._max_failures = max_failures
        self._failures: list[tuple[int, BaseException]] = []
        self._machine_numbers = itertools.count()
        self._hinted = False
        self._chunk_size = ChunkSize()
        #: whether to widen the batch (machines that pull only; each else takes its own work)
        self._width = Width(
            on_change=self._width_changed,
            prior_boot_s=runtime.boot_s.get((plan.fn_ref, plan.image)),
            active=self._pulls,
        )
        #: inputs handed in chunks whose results are not in, by call id
        self._chunked: dict[str, _Held] = {}
        #: indexes of inputs handed alone from now on: their chunk's machine died
        self._solo: set[int] = set()
        # Made here, in the caller's thread: the app's span around the map is its parent.
        self._trace = start_batch(plan.fn_ref, plan.batch_id or "", plan.image)
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
        failed: BaseException | None = None
        try:
            await check_secrets(self._runtime, self._plan)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self._standby:
                    tg.start_soon(self._claim_standbys)
                self._source.start(tg)
                if self._feeds:
                    tg.start_soon(self._scan_results)
                await self._start_machines(tg)
        except Exception as exc:
            failed = sole_error(exc)
            self._outcomes.abort(failed)
        finally:
            while self._claims:
                await self._claims.pop().release()
            self._source.close()
            self.stats.finished()
            if self._width.boot_s is not None:
                self._runtime.boot_s[self._plan.fn_ref, self._plan.image] = self._width.boot_s
            self._sweep()
            if self._trace is not None:
                self._trace.end(failed)

    async def _start_machines(self, tg: anyio.abc.TaskGroup) -> None:
        """Start a machine (a create, or a claimed standby) for each next input while the
        batch's and the runtime's limits allow, until the inputs run out."""
        while True:
            await self._until_wider()
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
                self._created_all = True
                break
            if not reserved:
                self._refuse(item)
                continue
            self._machines_left += 1
            tg.start_soon(self._machine, item, holder, claim)

    async def _until_wider(self) -> None:
        """Wait until another machine is worth starting (`flyjobs._batches.width`), or the
        batch has no more work (the next `WorkSource.take` says)."""
        width, source = self._width, self._source
        while True:
            if source.exhausted and not source.unhanded and not source.in_flight:
                return
            total = self.stats.total_hint
            unread = source.room if total is None else max(total - source.taken, 0)
            wait_s = width.wait_s(source.unhanded + unread)
            if not wait_s:
                return
            with anyio.move_on_after(wait_s):
                await self._width_event.wait()

    def _width_changed(self) -> None:
        self._width_event.set()
        self._width_event = anyio.Event()

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
        trace = None
        if self._trace is not None:
            base_id = f"{self._plan.batch_id}-{item.index}"
            trace = self._trace.call(item.index, base_id, item.queued_at)
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
            trace=trace,
            number=item.attempts,
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
        return self._first_payload(first), first.attempt.deadline

    def _first_payload(self, first: _Held) -> bytes:
        """The payload of the machine created for ``first``: its first chunk and, where
        machines read more from the store, the URL of the next."""
        chunk_url = None
        if first.feed is not None:
            expires_at = self._chunk_expiry((first, *first.following))
            chunk_url = first.feed.chunks.next_url(expires_at)
        return first.attempt.payload(
            self._plan,
            first.item.arguments,
            pulls=self._pulls,
            then=[self._payload(after) for after in first.following],
            chunk_url=chunk_url,
        )

    def _payload(self, held: _Held) -> bytes:
        return held.attempt.payload(self._plan, held.item.arguments, pulls=self._pulls)

    @staticmethod
    def _chunk_expiry(chunk: tuple[_Held, ...] | list[_Held]) -> float:
        """Until when the URL of the chunk after ``chunk`` must work: the machine reads it
        once ``chunk``'s inputs have run, at their deadlines at the latest."""
        last = max(held.attempt.deadline for held in chunk)
        return last + WORKER_DEADLINE_SLACK_S + NEXT_INPUT_WAIT_S + _CHUNK_URL_SLACK_S

    def _store_chunk_size(self, most: int = _MAX_STORE_CHUNK, held: int = 0) -> int:
        """Inputs in the next chunk (through the store) of a machine that holds ``held``
        inputs not run yet: about `CHUNK_WORK_S` of work by the mean run time so far
        (`_FIRST_CHUNK` before one is known), and no more than the machine's share of the
        inputs left (`flyjobs._batches.chunking.store_share`), within 1 and ``most`` (and so
        that a chunk of every machine fits in the read-ahead window)."""
        run_s = self.stats.phases["run"].mean_s
        size = _FIRST_CHUNK if run_s is None else round(CHUNK_WORK_S / max(run_s, INPUT_COST_S))
        # Shared among the machines there are (a batch whose creates the API paces has fewer
        # than max_machines for a while; the first ones take more work, in more chunks).
        machines = max(1, min(self._machines_left, self._max_machines))
        total = self.stats.total
        if total is not None:
            stats = self.stats
            undone = total - stats.done - stats.failed
            unheld = undone - stats.starting - stats.running
            share = store_share(run_s, undone=undone, unheld=unheld, held=held, machines=machines)
            size = min(size, share)
        return max(1, min(most, self._window // machines, size))

    async def _take_more(self, count: int, size: int = 0) -> list[Item]:
        """Up to ``count`` more inputs for a chunk, while their arguments keep ``size`` within
        the inline payload limit: those read already, and those the lazy reader reads within
        `_FILL_S` (a machine's chunk is not cut short because few inputs were read so far)."""
        items: list[Item] = []
        with anyio.move_on_after(_FILL_S):
            while len(items) < count and size <= MAX_INLINE_PAYLOAD_BYTES:
                item = await self._source.take(timeout_s=0 if self._source.exhausted else None)
                if item is None:
                    break
                items.append(item)
                if not self._plan.spilled(item.arguments):
                    size += len(item.arguments)
        return items

    async def _take_slice(self, first: _Held) -> None:
        """Give the machine about to be created for ``first`` the inputs that follow it in
        its first chunk, up to the chunk's size (`MAX_SLICE`) and the inline payload limit."""
        size = 0 if self._plan.spilled(first.item.arguments) else len(first.item.arguments)
        count = (self._store_chunk_size(MAX_SLICE) if self._feeds else self._slice) - 1
        for item in await self._take_more(count, size):
            held = await self._hand(item, creating=True, queue=len(first.following) + 1)
            first.following.append(held)
        if self._feeds:
            return  # `_look_for` looks for each result
        for held in (first, *first.following) if first.following else ():
            # The machine exits only after its whole slice: look for each result while it
            # runs, so values reach the caller (and a journal) as they come.
            held.attempt.ticket.polls = True

    async def _machine(self, item: Item, holder: object | None, claim: Claim | None) -> None:
        plan, runtime = self._plan, self._runtime
        held: _Held | None = None
        run: MachineRun | None = None
        slice_: list[_Held] = []
        feed: _Feed | None = None
        gauge = self._width.asked()
        try:
            first = held = await self._hand(item, creating=True)
            if self._slice > 1 or self._feeds:
                await self._take_slice(first)
                slice_ = first.following
            name = self._machine_name(first)
            feed = self._new_feed(first, name)
            try:
                run = await self._start(first, claim, name)
            except Exception as exc:
                self._create_failed()
                held = None
                await first.attempt.close()
                self._attempt_failed(first, exc)
                return
            self._created(run, first)
            async with self._feeding(feed):
                while held is not None:
                    held = await self._serve(held, run, gauge)
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
            self._machines_left -= 1
            gauge.end()
            if held is not None:
                self._watched.pop(held.call_id, None)
                await held.attempt.close()
                for each in held.following if held.chunk is not None else ():
                    await each.attempt.close()  # the batch is over: the rest of the chunk too
            for never_ran in slice_:
                # The slice's inputs after one that failed (or all, if the create failed).
                await self._never_ran(never_ran)
            if feed is not None:
                await feed.chunks.discard()
            if run is not None:
                runtime.live.forget(plan.app, run.id)
                await self._settle(run)
            elif claim is not None:
                await claim.release()  # never started (or already given back)
            if holder is not None:
                self._release(holder)

    def _machine_name(self, first: _Held) -> str:
        """The name of the machine created for ``first``: its call id, or, for a machine that
        takes more inputs, the batch's id and a number."""
        if self._reuse:
            return f"{self._plan.batch_id}-m{next(self._machine_numbers)}"
        return first.call_id

    def _create_failed(self) -> None:
        # The progress counts settle with the failure that follows.
        if self._budget is not None:
            self._budget.release(self._slice)

    def _created(self, run: MachineRun, first: _Held) -> None:
        if self._budget is not None and run.cost is not None:
            self._budget.created(run.cost, self._slice)
        first.on(run)
        self.stats.created(first.item.index, [h.item.index for h in first.following])
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

    async def _start(self, first: _Held, claim: Claim | None, name: str) -> MachineRun:
        """Create the machine ``name`` that takes ``first`` (and what follows it in its slice
        or chunk), or start the claimed standby ``claim`` with it."""
        plan, runtime = self._plan, self._runtime
        payload, deadline = self._first_payload(first), first.attempt.deadline
        if claim is not None:
            return await MachineRun.start_claimed(
                runtime, plan, claim, payload, deadline, pulls=self._reuse, ledger=self.ledger
            )
        return await MachineRun.create(
            runtime,
            plan,
            name,
            payload,
            deadline,
            pulls=self._reuse,
            paced=True,
            restart=partial(self._restart_clocks, first),
            ledger=self.ledger,
        )

    def _new_feed(self, first: _Held, name: str) -> _Feed | None:
        """The chunks of the machine ``name`` created for ``first`` (where machines read
        them from the store), its first chunk's results looked for."""
        if not self._feeds:
            return None
        chunks = self._runtime.channel.chunk_feed(name)
        last = first.following[-1] if first.following else first
        first.feed = _Feed(chunks, first.following, busy_at=time.time(), last=last)
        self._look_for(first, *first.following)
        return first.feed

    @contextlib.asynccontextmanager
    async def _feeding(self, feed: _Feed | None) -> AsyncIterator[None]:
        """While the machine's inputs are served: write its next chunks (`_feed_machine`)."""
        async with anyio.create_task_group() as feeding:
            if feed is not None:
                # Not busy before it exists: its first chunk runs after the create.
                feed.busy_at = time.time()
                feeding.start_soon(self._feed_machine, feed)
            yield
            feeding.cancel_scope.cancel()

    async def _never_ran(self, held: _Held) -> None:
        """``held`` was given to a machine that never ran it: it goes back to the batch,
        without counting an attempt."""
        self._watched.pop(held.call_id, None)
        await held.attempt.close()
        held.item.attempts -= 1
        self.stats.settled(held.item.index, "retried")
        self._source.give_back(held.item)

    async def _feed_machine(self, feed: _Feed) -> None:
        """Write the machine's next chunks, each once it holds no more than a chunk's work,
        until there is no more work for it (see the module docstring)."""
        try:
            while True:
                while self._holds_enough(feed) or self._ends_later(feed):
                    await feed.changed.wait()
                if not await self._write_chunk(feed):
                    return
        finally:
            feed.ended = True
            feed.notify()

    def _holds_enough(self, feed: _Feed) -> bool:
        """The machine holds more inputs not run than its next chunk would have: that waits."""
        ahead = len(feed.queue) + 1
        return ahead > self._store_chunk_size(held=ahead)

    def _ends_later(self, feed: _Feed) -> bool:
        """No work is left for the machine, but it still runs inputs written for it: "no more
        work" waits until their results are in. A machine that exited before the caller read
        its last bundles would have their inputs wait for its exit to be explained."""
        return bool(feed.queue) and self._source.drained

    async def _write_chunk(self, feed: _Feed) -> bool:
        """Write the machine's next chunk (with no inputs when none is ready yet), or "no
        more work" (then False)."""
        ahead = len(feed.queue) + 1
        items: list[Item] = []
        chunk: list[_Held] = []
        written = False
        try:
            # Only while the machine surely waits for the chunk: one it gave up on would hold
            # its inputs until its exit is seen.
            budget_s = feed.busy_at + NEXT_INPUT_WAIT_S - _CHUNK_MARGIN_S - time.time()
            # A second of the budget is kept for writing an empty chunk if none is ready.
            first = await self._source.take(
                timeout_s=0 if self._source.exhausted else max(budget_s - 1.0, 0.0)
            )
            if first is not None:
                # No input's deadline (nor its URLs' expiry) past the horizon.
                horizon = int(_QUEUE_HORIZON_S // self._plan.options.effective_timeout_s) - ahead
                count = min(self._store_chunk_size(held=ahead), max(horizon, MAX_SLICE))
                items = [first, *await self._take_more(count - 1)]
            if time.time() > feed.busy_at + NEXT_INPUT_WAIT_S - _CHUNK_MARGIN_S:
                return False  # it may have stopped waiting: it gets no more chunks
            if not items and self._source.exhausted and not self._source.waiting:
                await feed.chunks.write([], None)  # no more work
                return False
            for item in items:
                chunk.append(await self._hand(item, creating=False, queue=ahead + len(chunk)))
            items = []
            started = time.time()
            # An empty chunk (nothing to run yet, but the batch is not over): the machine
            # waits again, its idle period renewed.
            expires_at = (
                self._chunk_expiry(chunk)
                if chunk
                else started + NEXT_INPUT_WAIT_S + _CHUNK_URL_SLACK_S
            )
            key = await feed.chunks.write([self._payload(held) for held in chunk], expires_at)
            for held in chunk:
                held.chunk_key = key
            written = True
            # It will read the chunk: it is not waiting for the next before it has.
            feed.busy_at = max(feed.busy_at, started)
            feed.queue.extend(chunk)
            feed.last = chunk[-1] if chunk else feed.last
            self._look_for(*chunk)
            feed.notify()
            return True
        except TransportError as exc:
            logger.warning("could not write the next inputs of a machine: %s", exc)
            return False
        finally:
            for item in items:
                self._source.give_back(item)
            if not written:
                for held in chunk:
                    await self._never_ran(held)

    async def _scan_results(self) -> None:
        """Look for the results of every input machines hold in the store (`_scan_once`),
        spaced as `flyjobs._batches.result_polls` says."""
        polls = ResultPolls(anyio.current_time())
        while not (self._created_all and not self._machines_left):
            read = await self._scan_once(list(self._watched.values()))
            run_s = self.stats.phases["run"].mean_s
            wait_s = polls.after(read=read, run_s=run_s, now=anyio.current_time())
            if wait_s:
                await anyio.sleep(wait_s)

    async def _scan_once(self, watched: list[_Held]) -> bool:
        """Look for the results of ``watched`` with one listing; return whether one was read
        (a result listed but refused, or not readable yet, does not count).

        Each result listed is read into its ticket (where the input's machine collects it, in
        order), with those that came in the same bundle (`flyjobs._wire.chunk`); a machine
        whose last input is not listed is busy (see `_Feed.busy_at`)."""
        if not watched:
            return False
        channel = self._runtime.channel
        looked_at = time.time()
        try:
            listed = await channel.delivered(f"{self._plan.batch_id}-")
        except TransportError as exc:
            logger.info("could not look for results yet: %s", exc)
            return False
        for feed in {id(held.feed): held.feed for held in watched if held.feed}.values():
            if feed.last.call_id in self._watched and feed.last.call_id not in listed:
                feed.busy_at = max(feed.busy_at, looked_at)
        found = [held for held in watched if held.call_id in listed]
        read: list[str] = []
        try:
            async with anyio.create_task_group() as reading:
                for held in found:
                    reading.start_soon(self._read_result, held, read)
        finally:
            # Deleted once read, all in one request (not one per ticket as it closes), while
            # the next look goes on.
            if read:
                self._runtime.background(partial(channel.discard_results, read))
        for held in watched:
            if channel.bundled(held.call_id):
                # No object of its own: no request, so no turn of the concurrent reads.
                await self._take_result(held, [])
        return bool(read)

    def _look_for(self, *helds: _Held) -> None:
        """Look for the results of ``helds`` (`_scan_results`) until they are read."""
        for held in helds:
            self._watched[held.call_id] = held

    async def _read_result(self, held: _Held, read: list[str]) -> None:
        """Read ``held``'s result into its ticket; add its call id to ``read`` if it was."""
        async with self._reads:
            await self._take_result(held, read)

    async def _take_result(self, held: _Held, read: list[str]) -> None:
        """`_read_result`, without waiting for a turn of the concurrent reads."""
        try:
            if await held.attempt.ticket.look():
                # The scan deletes its object: closing the ticket need not.
                held.attempt.ticket.keep()
                read.append(held.call_id)
                self._watched.pop(held.call_id, None)
        except TransportError as exc:
            logger.info("could not read the result of %s yet: %s", held.call_id, exc)

    async def _late_result(
        self, held: _Held, feed: _Feed, error: FlyjobsError
    ) -> bytes | FlyjobsError | None:
        """``held``'s machine ended (or its deadline came) before its result was read: the
        result may be in a bundle of a later input, not read yet (then its body). Or it ran to
        its end and its result was still held for a bundle when a later input ended the
        machine (the machine's log marks its end): it goes back to the batch without counting
        an attempt (None). Else ``error``, its own."""
        # Its result may be in the bundle of an input queued after it on the machine (those
        # take their feed only once they are held).
        await self._scan_once([h for h in (held, *feed.queue) if h.call_id in self._watched])
        if held.attempt.ticket.delivered:
            return await held.attempt.ticket.result()
        tail = error.output_tail if isinstance(error, MachineCrashedError) else ""
        if call_mark("end", held.call_id) in tail.splitlines():
            await self._never_ran(held)
            return None
        return error

    async def _result_of(self, held: _Held, run: MachineRun) -> bytes | FlyjobsError | None:
        """The held input's result, or the error its attempt failed with; None when it went
        back to the batch (see `_late_result`)."""
        if held.attempt.ticket.delivered:
            body: bytes | FlyjobsError = await held.attempt.ticket.result()  # a chunk's: no wait
            run.traced(held.attempt, body)
        else:
            body = await run.result(held.attempt)
        self._chunked.pop(held.call_id, None)
        if not isinstance(body, bytes) and held.feed is not None:
            late = await self._late_result(held, held.feed, body)
            if late is None:
                return None
            body = late
        self._watched.pop(held.call_id, None)
        feed, key = held.feed, held.chunk_key
        if (
            feed is not None
            and key is not None
            and isinstance(body, bytes)
            and feed.chunks.read(key)
        ):
            # The machine read the chunk this input came in: it goes (one task per chunk, not
            # per input).
            self._runtime.background(partial(feed.chunks.delete, key))
        return body

    async def _serve(self, held: _Held, run: MachineRun, gauge: Gauge) -> _Held | None:
        """Wait for the held input's result (or the machine's end); return the next input
        handed to the machine, if any."""
        runtime, plan, machine_id = self._runtime, self._plan, run.id
        body = await self._result_of(held, run)
        if body is None:
            return None
        if not isinstance(body, bytes):
            await held.attempt.close()
            if held.chunk is not None and any(not each.returned for each in held.following):
                self._chunk_lost(held)
            else:
                self._attempt_failed(held, body)
            return None
        result = held.attempt.decoded(body)
        start, end = result.timings.get("function_start"), result.timings.get("function_end")
        run_s = max(end - start, 0.0) if start is not None and end is not None else 0.0
        if held.chunk is not None:
            held.chunk.run_s += run_s
        elif gauge.boot_s is None:
            gauge.first_result(run_s)
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
        return await self._next(held, run, gauge)

    async def _next(self, held: _Held, run: MachineRun, gauge: Gauge) -> _Held | None:
        """Answer the held delivery with the machine's next input (or no more work)."""
        while held.following and held.following[0].returned:
            await held.following.pop(0).attempt.close()  # given back already
        machine_id = run.id
        feed = held.feed
        while feed is not None and not held.following and not feed.ended:
            await feed.changed.wait()  # the next chunk is being written
        if held.following:
            # The next input of the machine's slice or chunk: it runs it already (or next).
            await held.attempt.close()
            next_held = held.following.pop(0)
            next_held.following, next_held.feed = held.following, feed
            next_held.on(run)
            if feed is not None:
                feed.notify()
            self._watch(machine_id, next_held.call_id)
            return next_held
        if feed is not None:
            # "No more work" was written (or no chunk could be): it exits by itself.
            await held.attempt.close()
            return None
        if held.chunk is not None:
            chunk = held.chunk
            round_trip_s = time.monotonic() - chunk.handed_at
            self._chunk_size.observe(
                chunk.count, chunk.run_s, round_trip_s, returned=chunk.returned
            )
            gauge.round_trip(chunk.count, round_trip_s, chunk.run_s)
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
        gauge.handed()
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
        if self._trace is not None:
            self._trace.settled(item.index)
        self._put(outcome, size)
        self._source.finished(item)
        self._forget_arguments(held)

    def _forget_arguments(self, held: _Held) -> None:
        if held.attempt.arguments_url is not None:
            key = self._args_key(held.item)
            self._runtime.background(partial(self._runtime.channel.discard_arguments, key))

    def _attempt_failed(self, held: _Held, error: BaseException) -> None:
        """An attempt of ``held``'s input failed: retry it elsewhere, or record its error."""
        self._watched.pop(held.call_id, None)
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
        if self._trace is not None:
            self._trace.settled(index, error)
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
