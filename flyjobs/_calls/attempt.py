"""One machine attempt, from create to destroy: the lifecycle every call runs on.

An `Attempt` is one try of one call (or batch input, or pool call): its id, its clocks (deadline,
result URL expiry), its result ticket and where its spilled arguments are. A `MachineRun` is one
machine: created (throttling waited out), watched (``/wait`` and its exit), its result for an
attempt collected from the channel or its death explained (`exit_error`), at the deadline one
last look for the result, then destroyed; on every exit path it is destroyed or exits by itself.
A run may instead start from a standby machine held under a `StandbyClaim`
(`MachineRun.start_claimed`): updated with its call rather than created, and on every exit
path stopped and given back (`StandbyClaim.give_back`) rather than destroyed.
`Retry` decides whether a failed attempt runs again. `outcome` turns a delivered result into the
call's value or error.

Single calls (`flyjobs._calls.dispatch`), detached calls (`flyjobs._calls.detach`), batches
(`flyjobs._batches.batch`) and pools (`flyjobs._pools.runner`) use it; they add only what is
theirs (inputs, slices, slots). It knows the result channel only by its protocol
(`flyjobs._results.channel.ResultTicket`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from .._cost.ledger import Ledger, MachineCost
from .._declare.options import CallOptions
from .._exceptions import (
    APIError,
    AuthenticationError,
    CallError,
    CallTimeoutError,
    ConfigError,
    FlyjobsError,
    MachineCrashedError,
    NotFoundError,
    OutOfMemoryError,
    RateLimitedError,
    RemoteImportError,
    ResultTooLargeError,
    SerializationError,
    ServerError,
    TransportError,
    WaitTimeoutError,
)
from .._machine_side.run import TAIL_CHARS
from .._output.call_lines import shown
from .._output.live import cut_marker
from .._results.channel import ResultTicket
from .._wire.machine import (
    EXIT_BAD_PAYLOAD,
    EXIT_DEADLINE,
    EXIT_DELIVERY_FAILED,
    EXIT_IMPORT_FAILED,
    EXIT_OK,
    EXIT_RESULT_REFUSED,
    EXIT_RESULT_TOO_LARGE,
    MAX_INBOX_RESULT_BYTES,
    NEXT_INPUT_WAIT_S,
)
from .._wire.remote_errors import rebuild_exception
from .._wire.result_envelope import ResultEnvelope, decode_result
from .._wire.seal import RESULT_KEY_ENV
from ..machines import Machine, paced_already, patient_until
from .machine_config import create_args
from .plan import WORKER_DEADLINE_SLACK_S, Plan
from .runtime import Runtime

if TYPE_CHECKING:
    from .._trace.spans import CallTrace
    from .handle import CallState

__all__ = (
    "EXIT_GRACE_S",
    "RETRY_BACKOFF_S",
    "Attempt",
    "StandbyClaim",
    "ExitWatch",
    "MachineRun",
    "Retry",
    "left_running",
    "spilled_key",
    "check_secrets",
    "destroy",
    "exit_error",
    "settle_runs",
    "outcome",
    "pace_create",
    "show_output",
    "tag",
    "trusted_modules",
    "value_of",
)

logger = logging.getLogger("flyjobs.dispatch")

_E = TypeVar("_E", bound=BaseException)

#: The Machines API action (rate-limit bucket) of a create.
_CREATE = "create_machine"
#: Seconds a machine may take to exit after delivering its last result before it is destroyed.
EXIT_GRACE_S = 10.0
#: Seconds a result URL stays valid past its call's worker deadline (clock skew, slow delivery).
_URL_SLACK_S = 60.0
#: Backoff (s) before the first retry of a function's own exception (``retry_on``); it doubles
#: with each further attempt, up to ``_MAX_BACKOFF_S``.
RETRY_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0


def spilled_key(call_id: str) -> str:
    """The store key of a call's arguments too large to travel inline."""
    return f"args/{call_id}"


def left_running(runtime: Runtime, plan: Plan) -> bool:
    """True when this process exits and leaves the call to run on (a detached call)."""
    return plan.detach and runtime.closing


@dataclasses.dataclass(eq=False)
class Attempt:
    """One attempt of a call: its id, its ``timeout_s`` and deadline (unix s), its result
    ticket, and the URL of its arguments when they were too large to travel inline (see
    `open`); when the caller traces, its call's span (``trace``), its number among the call's
    attempts and when it started (unix s); and its cost in USD once known (``cost_usd``: the
    call's span carries it when the attempt ends, see `MachineRun.result`).

    Closing it (`close`) forgets the ticket; it is idempotent and shielded from cancellation.
    """

    call_id: str
    timeout_s: float
    deadline: float
    ticket: ResultTicket
    #: a presigned URL: a credential, kept out of the repr
    arguments_url: str | None = dataclasses.field(default=None, repr=False)
    trace: CallTrace | None = dataclasses.field(default=None, repr=False)
    number: int = 1
    opened_at: float = 0.0
    cost_usd: float | None = None
    _closed: bool = dataclasses.field(default=False, init=False, repr=False)
    #: (body, its envelope): the last result decoded by `decoded`, when the caller traces
    _decoded: tuple[bytes, ResultEnvelope] | None = dataclasses.field(
        default=None, init=False, repr=False
    )

    @classmethod
    def open(
        cls,
        runtime: Runtime,
        plan: Plan,
        call_id: str,
        arguments: bytes,
        *,
        args_key: str,
        queue: int = 0,
        replies: bool = False,
        hold_s: float = NEXT_INPUT_WAIT_S,
        on_late: Callable[[], None] | None = None,
        on_returned: Callable[[str], None] | None = None,
        trace: CallTrace | None = None,
        number: int = 1,
    ) -> Attempt:
        """Start an attempt's clocks now: its deadline is ``timeout_s`` away, or ``1 + queue``
        times that when ``queue`` inputs run before it on its machine (a fixed slice). Its
        result ticket is valid a minute past the worker's own deadline (and, for a ``replies``
        ticket, its ``hold_s`` more: a worker that lost its held connection delivers again);
        spilled arguments (already put under ``args_key``) get a URL valid until then.
        ``replies``, ``hold_s``, ``on_late``, ``on_returned``: see
        `flyjobs._results.channel.Channel.ticket`. ``trace``: the call's span (the caller
        traces), in which this is attempt ``number`` (1 for the first)."""
        timeout_s = plan.options.effective_timeout_s
        opened_at = time.time()
        deadline = opened_at + timeout_s * (1 + queue)
        arguments_url = None
        if plan.spilled(arguments):
            expires_at = deadline + WORKER_DEADLINE_SLACK_S
            arguments_url = runtime.channel.arguments_url(args_key, expires_at)
        ticket = runtime.channel.ticket(
            call_id,
            deadline + WORKER_DEADLINE_SLACK_S + _URL_SLACK_S + (hold_s if replies else 0.0),
            replies=replies,
            hold_s=hold_s,
            on_late=on_late,
            on_returned=on_returned,
        )
        if trace is not None:
            trace.attempt_opened(number, opened_at)
        return cls(call_id, timeout_s, deadline, ticket, arguments_url, trace, number, opened_at)

    @classmethod
    def resume(cls, plan: Plan, ticket: ResultTicket, deadline: float) -> Attempt:
        """An attempt made earlier (a detached call's), from its ticket and deadline."""
        return cls(ticket.call_id, plan.options.effective_timeout_s, deadline, ticket)

    def payload(self, plan: Plan, arguments: bytes, **extra: Any) -> bytes:
        """The attempt's call envelope (see `flyjobs._calls.plan.Plan.payload`)."""
        return plan.payload(
            self.call_id,
            arguments,
            deadline=self.deadline,
            result_url=self.ticket.url,
            arguments_url=self.arguments_url,
            traceparent=None if self.trace is None else self.trace.traceparent,
            **extra,
        )

    def decoded(self, body: bytes) -> ResultEnvelope:
        """``body``, this attempt's delivered result, decoded. When the caller traces, both the
        call's span and the caller's outcome read it: it is decoded once for both.

        :raises SerializationError: ``body`` is not a flyjobs result envelope.
        """
        memo = self._decoded
        if memo is not None and memo[0] is body:
            return memo[1]
        result = decode_result(body)
        if self.trace is not None:
            self._decoded = (body, result)
        return result

    async def close(self) -> None:
        """Forget the ticket (once; shielded: a cancelled caller still cleans up)."""
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self.ticket.aclose()


class Retry:
    """Whether a failed attempt runs again, and after how long (``retries``, ``retry_on``)."""

    def __init__(self, options: CallOptions) -> None:
        self._options = options

    def again(self, exc: BaseException, attempts: int, *, stop: bool = False) -> float | None:
        """Seconds to wait before another attempt, after the ``attempts``-th failed with
        ``exc``; None when ``exc`` is final (out of ``retries``, not retryable, or ``stop``),
        and then it notes how many times the call ran."""
        if not stop and attempts <= self._options.retries and retryable(exc, self._options):
            return retry_delay_s(exc, attempts)
        note_attempts(exc, attempts)
        return None


def retryable(exc: BaseException, options: CallOptions) -> bool:
    """Whether an attempt that failed with ``exc`` is run again (within ``retries``).

    Failures of the machine or the platform are; a refused request (4xx) would only be refused
    again, and the same machine size or deadline would fail again. The function's own
    exceptions are retried when their type is in ``retry_on``.
    """
    if isinstance(exc, (OutOfMemoryError, CallTimeoutError)):
        return False
    if isinstance(exc, (MachineCrashedError, ServerError, TransportError)):
        return True
    return bool(options.retry_on) and isinstance(exc, options.retry_on)


def retry_delay_s(exc: BaseException, attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first): none after a machine
    failure, an exponential backoff after the function's own exception."""
    if isinstance(exc, (MachineCrashedError, ServerError, TransportError)):
        return 0.0
    return min(_MAX_BACKOFF_S, RETRY_BACKOFF_S * 2.0 ** (attempt - 1))


def note_attempts(exc: BaseException, attempts: int) -> None:
    """Record on a final error how many times its call ran."""
    if isinstance(exc, CallError):
        exc.attempts = attempts
    if attempts > 1:
        exc.add_note(f"flyjobs: failed after {attempts} attempts")


async def check_secrets(runtime: Runtime, plan: Plan) -> None:
    """Check that the app has the secrets the calls need (see `Runtime.check_secrets`).

    :raises ConfigError: naming the missing secrets.
    :raises APIError, TransportError: the check failed; a note names the likely setting.
    """
    try:
        await runtime.check_secrets(plan.app, plan.options.secrets)
    except (APIError, TransportError) as exc:
        _add_hint(exc, runtime, plan.app)
        raise


async def pace_create(runtime: Runtime, app: str) -> None:
    """Wait for the turn of one create in ``app`` under the client's pacing (see
    `MachineRun.create`'s ``paced``)."""
    await runtime.client.pace(_CREATE, app)


class StandbyClaim(Protocol):
    """A standby machine this process holds under its lease (see `flyjobs._standby.claim`)."""

    machine_id: str
    nonce: str

    async def give_back(self) -> None:
        """Stop the machine (if it runs), reset its config, release its lease; never raises,
        shielded from cancellation."""
        ...


class ExitWatch:
    """Waits, in the background from its creation on, for a machine to stop, be destroyed, or
    fail to launch.

    One ``/wait`` serves both ends of a machine's life: it tells the caller that the machine
    died without a result, and once the caller has its last result (`after_result`) the machine
    gets ``EXIT_GRACE_S`` to exit by itself before it is destroyed. `stop` ends the watch when
    the caller destroys the machine itself.
    """

    def __init__(
        self, runtime: Runtime, app: str, machine_id: str, *, version: str | None = None
    ) -> None:
        self.exited = anyio.Event()
        self.error: FlyjobsError | None = None
        #: unix time (s) the machine was seen stopped or destroyed
        self.exited_at: float | None = None
        self._runtime = runtime
        self._app = app
        self.machine_id = machine_id
        #: the machine version watched (a claimed standby's updated one: not its stopped past)
        self._version = version
        self._scope = anyio.CancelScope()
        self._result_in = False
        runtime.background(self._run)

    def after_result(self) -> None:
        """The caller has its last result: destroy the machine if it has not exited in the
        grace time."""
        self._result_in = True
        self._scope.deadline = anyio.current_time() + EXIT_GRACE_S

    def stop(self) -> None:
        """The caller is destroying the machine itself: stop watching."""
        self._scope.cancel()

    async def _run(self) -> None:
        exited = False
        try:
            with self._scope:
                # A machine that fails to launch ends "failed" on Fly, and may stay there.
                await self._runtime.client.wait(
                    self._app,
                    self.machine_id,
                    ("stopped", "destroyed", "failed"),
                    timeout_s=24 * 3600.0,
                    version=self._version,
                )
                exited = True
                self.exited_at = time.time()
        except (APIError, TransportError, WaitTimeoutError) as exc:
            self.error = exc
        except BaseException:
            # The runtime is shutting down: a machine whose caller is done is ours alone.
            if self._result_in:
                with anyio.CancelScope(shield=True):
                    await destroy(self._runtime, self._app, self.machine_id)
            raise
        finally:
            self.exited.set()
        if self._result_in and not exited:
            await destroy(self._runtime, self._app, self.machine_id)


class MachineRun:
    """One machine running attempts, watched from its creation (`ExitWatch`) until it has
    exited or been destroyed.

    :ivar id: the machine's id.
    :ivar watch: its exit watch.
    :ivar cost: its entry in a batch's or pool's ledger (created with one), billed from its
        own events by `settle` once it has exited.
    :ivar claim: the standby's claim, when the machine is a claimed standby.
    :ivar region: its region, as the create answered (None when adopted).
    :ivar created: unix times (s) its create request (for a claimed standby, its start) was
        first sent and answered (None when adopted): the ``create`` phase of the attempts it
        was created with.
    """

    def __init__(
        self,
        runtime: Runtime,
        plan: Plan,
        machine_id: str,
        *,
        claim: StandbyClaim | None = None,
        version: str | None = None,
        region: str | None = None,
        created: tuple[float, float] | None = None,
    ) -> None:
        self.id = machine_id
        self.claim = claim
        self.region = region
        self.created = created
        self.watch = ExitWatch(runtime, plan.app, machine_id, version=version)
        self.cost: MachineCost | None = None
        self._runtime = runtime
        self._plan = plan
        self._destroyed = False

    def keep_cost(self, ledger: Ledger | None, region: str | None) -> None:
        """Keep this machine's cost in ``ledger`` (if any), at its guest's price in ``region``."""
        if ledger is not None:
            self.cost = ledger.machine(
                self.id, ledger.price_of(self._plan.options.guest(), region), region
            )

    @classmethod
    async def create(
        cls,
        runtime: Runtime,
        plan: Plan,
        name: str,
        payload: bytes,
        deadline: float,
        *,
        pulls: bool,
        paced: bool = False,
        restart: Callable[[], Awaitable[tuple[bytes, float]]] | None = None,
        ledger: Ledger | None = None,
    ) -> MachineRun:
        """Create the machine ``name`` carrying ``payload`` as its first call, and watch it.

        Throttling (429) is waited out up to ``deadline`` (unix s), the first call's own
        deadline, and never counts as a failure. A machine that ``pulls`` more inputs has no
        fixed deadline. ``paced``: the caller took this create's turn with `pace_create`
        already.

        ``restart``: the first call is a batch input, not taken until a machine exists, so its
        clock must not run while the API throttles: throttling is waited out however long it
        lasts (backing off, then paced), and each create sent again carries the payload and
        deadline ``await restart()`` gives, with the input's clocks started anew.

        :raises CallTimeoutError: the API throttled creates until the deadline.
        :raises APIError, TransportError: the create failed; a note names the likely setting.
        """
        sent_at = time.time()
        while True:
            config = plan.machine_config(name, payload, deadline=None if pulls else deadline)
            now = anyio.current_time()
            # With restart, a 429 comes back here at once: the create is sent again with a new
            # payload, not as it was.
            patience = now if restart is not None else now + max(deadline - time.time(), 0.0)
            try:
                paced_ = paced_already(_CREATE, plan.app) if paced else contextlib.nullcontext()
                with patient_until(patience), paced_:
                    machine = await runtime.client.create_machine(
                        plan.app, config, name=name, **create_args(plan.options)
                    )
                created = (sent_at, time.time())
                run = cls(runtime, plan, machine.id, region=machine.region, created=created)
                run.keep_cost(ledger, machine.region)
                return run
            except RateLimitedError as exc:
                if restart is None:
                    raise CallTimeoutError(
                        f"call {name}: the Machines API throttled machine creation (429) until"
                        f" the call's timeout_s={plan.options.effective_timeout_s:g} passed;"
                        " raise timeout_s or lower max_machines"
                    ) from exc
                await runtime.client.pace_after_throttling(_CREATE, plan.app, exc.retry_after_s)
                payload, deadline = await restart()
                paced = True
            except (APIError, TransportError) as exc:
                _add_hint(exc, runtime, plan.app)
                raise

    @classmethod
    async def start_claimed(
        cls,
        runtime: Runtime,
        plan: Plan,
        claim: StandbyClaim,
        payload: bytes,
        deadline: float,
        *,
        pulls: bool,
        ledger: Ledger | None = None,
    ) -> MachineRun:
        """Start the claimed standby ``claim`` with ``payload`` as its first call: one update
        (its config for the call, under the claim's lease), which boots it; then watch it.
        With ``ledger``, its cost is kept there from now on, as a created machine's is.

        Fly limits updates per machine, so standbys all start at once, with no queue behind
        the create rate; a 429 is waited out up to ``deadline`` (unix s) all the same. On
        failure the standby is given back before the error propagates.

        :raises CallTimeoutError: the API throttled the update until the deadline.
        :raises APIError, TransportError: the update failed.
        """
        config = plan.machine_config(
            claim.machine_id, payload, deadline=None if pulls else deadline, claimed=True
        )
        patience = anyio.current_time() + max(deadline - time.time(), 0.0)
        sent_at = time.time()
        try:
            with patient_until(patience):
                machine = await runtime.client.update_machine(
                    plan.app, claim.machine_id, config, nonce=claim.nonce
                )
        except BaseException as exc:
            await claim.give_back()
            if isinstance(exc, RateLimitedError):
                raise CallTimeoutError(
                    f"standby {claim.machine_id}: the Machines API throttled its update (429)"
                    f" until the call's timeout_s={plan.options.effective_timeout_s:g} passed"
                ) from exc
            raise
        run = cls(
            runtime,
            plan,
            machine.id,
            claim=claim,
            version=machine.version,
            region=machine.region,
            created=(sent_at, time.time()),
        )
        run.keep_cost(ledger, machine.region)
        return run

    @classmethod
    async def adopt(cls, runtime: Runtime, plan: Plan, machine_id: str, call_id: str) -> MachineRun:
        """Watch a machine created earlier (a detached call's).

        :raises MachineCrashedError: the machine is gone.
        """
        try:
            await runtime.client.get_machine(plan.app, machine_id)
        except NotFoundError:
            raise MachineCrashedError(
                f"detached call {call_id}: machine {machine_id} is gone and left no result",
                exit_code=None,
            ) from None
        return cls(runtime, plan, machine_id)

    async def result(
        self, attempt: Attempt, *, shared: Callable[[], bool] | None = None
    ) -> bytes | FlyjobsError:
        """Wait for ``attempt``'s result, the machine's exit, or the attempt's deadline.

        Returns the result's body (a result that came in as the deadline struck too: a
        delivered result is never lost); or, when the attempt failed and the machine ran its
        last (it exited without the result, or it was destroyed at the deadline), the error
        the attempt failed with, tagged with the call. ``shared``, asked at the deadline: other
        calls still run on the machine, so it is not destroyed (it takes no more calls, and
        ends once they are done).

        Cancelled (or the watch failed): the machine is destroyed, unless this process exits
        and leaves a detached call to run on.
        """
        outcome = await self._result(attempt, shared)
        self.traced(attempt, outcome)
        return outcome

    def traced(self, attempt: Attempt, outcome: bytes | FlyjobsError) -> None:
        """Give ``attempt``'s phases to its call's span, when the caller traces (see
        `flyjobs._trace.spans`): `result` does, and a caller that took a result from the
        ticket itself (a batch's chunk, delivered together)."""
        trace = attempt.trace
        if trace is None:
            return
        timings, failed, exit_code = None, None, None
        if isinstance(outcome, bytes):
            try:
                # A body that does not decode is the caller's to report.
                result: ResultEnvelope | None = attempt.decoded(outcome)
            except SerializationError:
                result = None
            if result is not None:
                timings = result.timings
                if result.error is not None:
                    failed = f"{result.error.type}: {result.error.message}"
        else:
            failed = f"{type(outcome).__name__}: {outcome}"
            exit_code = getattr(outcome, "exit_code", None)
        created = self.created
        if created is not None and attempt.opened_at > created[1]:
            created = None  # handed to the machine after it was created
        trace.attempt_ended(
            attempt.number,
            opened_s=attempt.opened_at,
            end_s=time.time(),
            machine_id=self.id,
            region=self.region,
            created=created,
            timings=timings,
            failed=failed,
            exit_code=exit_code,
            cost_usd=attempt.cost_usd,
        )

    async def _result(
        self, attempt: Attempt, shared: Callable[[], bool] | None
    ) -> bytes | FlyjobsError:
        ticket, call_id = attempt.ticket, attempt.call_id
        try:
            with anyio.fail_after(max(attempt.deadline - time.time(), 0.001)):
                body = await _collect(ticket, self.watch)
        except TimeoutError:
            with anyio.CancelScope(shield=True):
                if await ticket.look():
                    return await ticket.result()
            kept = shared is not None and shared()
            if not kept:
                await self.destroy()
            return tag(
                CallTimeoutError(
                    f"call {call_id} did not finish within"
                    f" timeout_s={attempt.timeout_s:g}; machine {self.id}"
                    f" {'takes no more calls' if kept else 'was destroyed'}"
                ),
                call_id,
                self.id,
            )
        except BaseException:
            self.watch.stop()
            if not left_running(self._runtime, self._plan):
                await self.destroy()
            raise
        if body is not None:
            return body
        error = await exit_error(
            self._runtime, self._plan.app, self.id, self._plan.options, spoiled=ticket.spoiled
        )
        return tag(error, call_id, self.id)

    async def value(self, attempt: Attempt, state: CallState) -> Any:
        """A single call's value (its machine's only attempt), or raise its error; the machine
        then gets `EXIT_GRACE_S` to exit by itself."""
        body = await self.result(attempt)
        if isinstance(body, FlyjobsError):
            raise body
        state.timings.result_at = time.time()
        self.got_last_result()
        return await outcome(self._runtime, self._plan, body, attempt.call_id, self.id)

    def got_last_result(self) -> None:
        """The caller has the machine's last result: it is destroyed if it has not exited by
        itself within `EXIT_GRACE_S` (the watch sees to it in the background)."""
        self.watch.after_result()

    async def finish(self) -> None:
        """The machine was told there is no more work: wait `EXIT_GRACE_S` for it to exit,
        else destroy it (a claimed standby is given back either way)."""
        with anyio.move_on_after(EXIT_GRACE_S):
            await self.watch.exited.wait()
        if not self.watch.exited.is_set() or self.claim is not None:
            await self.destroy()

    async def settle(self, wait_s: float = EXIT_GRACE_S) -> None:
        """Bill the machine in its ledger from its own start and exit events (once; shielded):
        wait up to ``wait_s`` for it to be stopped or destroyed (it was told to exit, or was
        destroyed), then read its events. A machine already gone keeps its estimate."""
        if self.cost is None or self.cost.settled:
            return
        app, runtime = self._plan.app, self._runtime
        with anyio.CancelScope(shield=True):
            events = None
            with anyio.move_on_after(wait_s):
                if not self.watch.exited.is_set() or self.watch.error is not None:
                    with contextlib.suppress(APIError, TransportError, WaitTimeoutError):
                        await runtime.client.wait(
                            app, self.id, ("stopped", "destroyed", "failed"), timeout_s=wait_s
                        )
                with contextlib.suppress(APIError, TransportError):
                    # Its events alone: its price (guest, region) is known from its creation.
                    events = await runtime.client.list_events(app, self.id, limit=50)
            self.cost.settle(events)

    async def destroy(self) -> None:
        """Stop watching and destroy the machine (once; shielded); a claimed standby is
        stopped and given back instead (`StandbyClaim.give_back`)."""
        self.watch.stop()
        if not self._destroyed:
            self._destroyed = True
            with anyio.CancelScope(shield=True):
                if self.claim is not None:
                    await self.claim.give_back()
                else:
                    await destroy(self._runtime, self._plan.app, self.id)


#: Machines whose events `settle_runs` reads one by one at once (those the listing missed).
_SETTLE_CONCURRENCY = 8


async def settle_runs(
    runtime: Runtime, app: str, runs: list[MachineRun], metadata: Mapping[str, str]
) -> None:
    """Bill ``runs`` (machines that have ended) in their ledger from their own events, read
    in one listing of the app's machines that carry ``metadata`` (a batch's id: one request,
    or a page per few hundred machines, where reading each would be one request per
    machine); a machine the listing misses, or shows not ended yet, is read on its own
    (`MachineRun.settle`)."""
    pending = [run for run in runs if run.cost is not None and not run.cost.settled]
    if not pending:
        return
    listed: dict[str, Machine] = {}
    with anyio.CancelScope(shield=True), contextlib.suppress(APIError, TransportError):
        machines = await runtime.client.list_machines(app, include_deleted=True, metadata=metadata)
        listed = {machine.id: machine for machine in machines}
    rest = []
    for run in pending:
        machine = listed.get(run.id)
        if machine is not None and run.cost is not None and machine.state in _ENDED:
            run.cost.settle(machine.events)
        else:
            rest.append(run)
    limiter = anyio.CapacityLimiter(_SETTLE_CONCURRENCY)

    async def one(run: MachineRun) -> None:
        async with limiter:
            await run.settle()

    async with anyio.create_task_group() as tg:
        for run in rest:
            tg.start_soon(one, run)


#: States of a machine that has ended (its last exit event is in).
_ENDED = ("stopped", "destroyed", "failed")


async def _collect(ticket: ResultTicket, watch: ExitWatch) -> bytes | None:
    """The result body as soon as it is in, or None if the machine exited without one.

    Both are awaited together: a machine that dies never leaves the call waiting for a result
    until its timeout.
    """
    body: bytes | None = None

    async with anyio.create_task_group() as tg:

        async def result() -> None:
            nonlocal body
            body = await ticket.result()
            tg.cancel_scope.cancel()

        async def exit_() -> None:
            await watch.exited.wait()
            if watch.error is not None:
                raise watch.error
            await ticket.after_exit()
            tg.cancel_scope.cancel()

        tg.start_soon(result)
        tg.start_soon(exit_)
        tg.start_soon(ticket.watch)
    # A result found just as the exit branch ended the wait still counts.
    return body if body is not None or not ticket.delivered else await ticket.result()


async def outcome(runtime: Runtime, plan: Plan, body: bytes, call_id: str, machine_id: str) -> Any:
    """The value of a delivered result (its output shown), or raise the error it carries
    (tagged with the call)."""
    result = decode_result(body)
    await show_output(runtime, plan, machine_id, call_id, result)
    return value_of(result, plan, call_id, machine_id)


async def show_output(
    runtime: Runtime, plan: Plan, machine_id: str, call_id: str, result: ResultEnvelope
) -> bool:
    """Finish showing a call's output as ``plan.output`` says: with ``live``, its last live
    lines, or (when the logs could not be followed) the tail its result carried; with
    ``errors``, that tail if the call failed. Return True when it printed lines not shown."""
    printed = bool(result.stdout_tail or result.stderr_tail)
    if plan.output == "live":
        if not await runtime.live.finish(plan.app, machine_id, printed=printed):
            _echo_output(call_id, result.stdout_tail, result.stderr_tail)
        return False
    if plan.output == "errors" and not result.ok:
        _echo_output(call_id, result.stdout_tail, result.stderr_tail)
        return False
    return printed


def value_of(result: ResultEnvelope, plan: Plan, call_id: str, machine_id: str | None) -> Any:
    """The value of a decoded result, or raise the error it carries (tagged with the call).

    Decoded by the call's own options, never by what the delivered envelope says.
    """
    fn_ref = plan.fn_ref
    pickle, may_import = plan.options.pickle, trusted_modules(fn_ref)
    error = result.error
    if result.ok or error is None:
        return result.value(pickle=pickle, may_import=may_import)
    if error.stage == "code":
        # The worker refused the call's code bundle before unpacking it (seal or hash wrong).
        machine = f" (machine {machine_id})" if machine_id else ""
        raise ConfigError(f"call {call_id}{machine}: {error.message}")
    if error.stage == "payload":
        # The worker refused its payload unread (spilled arguments that fail their digest).
        machine = f" (machine {machine_id})" if machine_id else ""
        raise SerializationError(f"call {call_id}{machine}: {error.message}")
    if error.stage in ("import", "arguments"):
        what = fn_ref if error.stage == "import" else f"a class in the arguments of {fn_ref}"
        raise tag(
            RemoteImportError(what, error.type, error.message, error.traceback),
            call_id,
            machine_id,
        )
    raise tag(rebuild_exception(error, pickle=pickle, may_import=may_import), call_id, machine_id)


def trusted_modules(fn_ref: str) -> Callable[[str], bool]:
    """Which modules not imported yet a result may import: the function's own module and those
    of its top-level package, never one the result merely names (see docs/threat-model.md)."""
    module = fn_ref.partition(":")[0]
    package = module.partition(".")[0]

    def may_import(name: str) -> bool:
        return name == module or name == package or name.startswith(f"{package}.")

    return may_import


def _echo_output(call_id: str, stdout: str, stderr: str) -> None:
    # Each line marked with the call it came from; a tail that fills the worker's limit is cut.
    for text, stream in ((stdout, sys.stdout), (stderr, sys.stderr)):
        if text:
            cut = len(text) >= TAIL_CHARS
            lines = [f"[{call_id}] {shown(line)}\n" for line in text.splitlines()[cut:]]
            stream.write((cut_marker(call_id) + "\n" if cut else "") + "".join(lines))
            stream.flush()


async def exit_error(
    runtime: Runtime,
    app: str,
    machine_id: str,
    options: CallOptions,
    *,
    spoiled: str | None = None,
) -> FlyjobsError:
    """Why a machine exited without a result, from its exit event and its last log lines.

    A machine that failed to launch (state ``failed``, which Fly may leave as it is despite
    ``auto_destroy``) is destroyed here, and the error names its image.

    :param spoiled: why the object found at the result's key in the store was ignored, if one
        was (see `flyjobs._results.channel.StoreTicket.spoiled`).
    """
    machine = await _machine_or_none(runtime, app, machine_id)
    if machine is not None and machine.state == "failed":
        await destroy(runtime, app, machine_id)
        image = machine.config.image if machine.config is not None else "?"
        tail = await _log_tail(runtime, app, machine_id)
        return MachineCrashedError(
            f"machine {machine_id} failed to launch image {image!r} and was destroyed: can Fly"
            " pull that image (was it pushed, is the tag right; see FLYJOBS_IMAGE)?",
            exit_code=(_exit_event(machine) or {}).get("exit_code"),
            output_tail=tail,
        )
    exit_event = _exit_event(machine)
    code = exit_event.get("exit_code") if exit_event else None
    tail = await _log_tail(runtime, app, machine_id)
    if exit_event and exit_event.get("oom_killed"):
        memory = options.guest().get("guest", {}).get("memory_mb", options.size)
        return OutOfMemoryError(
            f"machine {machine_id} ran out of memory ({memory} MB) and was killed;"
            " raise memory_mb= in @flyjobs.remote",
            exit_code=code,
            output_tail=tail,
        )
    if code == EXIT_DEADLINE:
        return CallTimeoutError(f"the call reached its deadline on machine {machine_id}")
    if code == EXIT_RESULT_TOO_LARGE:
        return ResultTooLargeError(
            f"the result of the call on machine {machine_id} is over the"
            f" {MAX_INBOX_RESULT_BYTES // 1048576} MiB the result inbox accepts"
            " (MAX_INBOX_RESULT_BYTES); configure an object store (FLYJOBS_STORE, or"
            " BUCKET_NAME from `fly storage create`) to bring back results of any size, or"
            " return a reference to the data instead",
            output_tail=tail,
        )
    if code == EXIT_RESULT_REFUSED:
        return ConfigError(
            f"the result of machine {machine_id} was refused: it was not sealed with this"
            f" process's result key, so the app's {RESULT_KEY_ENV} secret is not the"
            f" {RESULT_KEY_ENV} set here; give both the same value (fly secrets set"
            f' {RESULT_KEY_ENV}="${RESULT_KEY_ENV}")'
        )
    if code == EXIT_OK and spoiled is not None:
        return MachineCrashedError(
            f"machine {machine_id} exited with code 0 without a result this process accepts:"
            f" the stored result failed its seal ({spoiled}), so it was overwritten by someone"
            f" who can write the bucket, or the app's {RESULT_KEY_ENV} secret is not the one"
            " set here",
            exit_code=code,
            output_tail=tail,
        )
    reasons = {
        EXIT_OK: "the worker exited before it delivered one (did the function call os._exit?)",
        EXIT_BAD_PAYLOAD: "the worker could not read its payload (is the image's flyjobs"
        " version the same as this one?)",
        EXIT_IMPORT_FAILED: "the worker could not import the function (is your code in the image?)",
        EXIT_DELIVERY_FAILED: runtime.channel.undelivered_reason(tail),
    }
    what = reasons.get(code if isinstance(code, int) else -1, "it crashed")
    shown = "unknown" if code is None else str(code)
    return MachineCrashedError(
        f"machine {machine_id} exited with code {shown} without a result: {what}",
        exit_code=code if isinstance(code, int) else None,
        output_tail=tail,
    )


async def _machine_or_none(runtime: Runtime, app: str, machine_id: str) -> Machine | None:
    try:
        return await runtime.client.get_machine(app, machine_id)
    except NotFoundError:
        return None  # destroyed and past retention: the exit code is no longer known


def _exit_event(machine: Machine | None) -> dict[str, Any] | None:
    if machine is None:
        return None
    for event in machine.events or ():
        if event.type == "exit" and event.exit_event is not None:
            return event.exit_event.model_dump()
    return None


async def _log_tail(runtime: Runtime, app: str, machine_id: str, lines: int = 20) -> str:
    try:
        return await runtime.client.log_tail(app, machine_id, lines=lines)
    except (APIError, TransportError):
        return ""


async def destroy(runtime: Runtime, app: str, machine_id: str) -> None:
    """Destroy the machine (forced); one already gone is not a problem."""
    try:
        await runtime.client.delete_machine(app, machine_id, force=True)
    except NotFoundError:
        pass  # already gone
    except (APIError, TransportError) as exc:
        # Its own deadline still ends it (the worker exits, auto_destroy removes it).
        logger.error("could not destroy machine %s: %s", machine_id, exc)


def _add_hint(exc: FlyjobsError, runtime: Runtime, app: str) -> None:
    """Note on a failed create what in the user's settings most likely caused it."""
    api = runtime.client.base_url
    if isinstance(exc, AuthenticationError):
        exc.add_note(f"the Machines API at {api} refused the token: check FLY_API_TOKEN")
    elif isinstance(exc, NotFoundError):
        exc.add_note(
            f"there is no app {app!r} at {api}: create it (`fly apps create {app}`), or name"
            " another with FLY_APP, `app` under [tool.flyjobs], or app= on @flyjobs.remote"
        )
    elif isinstance(exc, TransportError):
        exc.add_note(f"the Machines API at {api} could not be reached: check FLY_API_HOSTNAME")


def tag(exc: _E, call_id: str, machine_id: str | None) -> _E:
    """``exc`` marked with the call (and machine) it came from, when it is a `CallError`."""
    if isinstance(exc, CallError):
        exc.call_id = call_id
        exc.machine_id = machine_id
    return exc
