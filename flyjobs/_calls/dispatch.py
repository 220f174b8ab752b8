"""One call on its own machine (``fn.remote``, ``fn.spawn``): create → wait → result and exit.

The call's clocks (its deadline, its result URL's expiry) start when its machine is created,
after the pool limit let it in. Every exit path (value, error, timeout, cancellation,
interpreter exit) leaves the machine destroyed or on its way to ``destroyed`` by its own
``auto_destroy``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from .._declare.options import CallOptions
from .._declare.output_choice import resolve_output
from .._exceptions import (
    CallError,
    CallTimeoutError,
    ConfigError,
    MachineCrashedError,
    OutOfMemoryError,
    ServerError,
    TransportError,
)
from .._results.channel import ResultTicket
from .._wire.protocol import NEXT_INPUT_WAIT_S
from ..machines import Machine
from .attempt import (
    ExitWatch,
    check_secrets,
    create_machine,
    destroy,
    exit_error,
    outcome,
    tag,
)
from .detach import check_detachable, write_record
from .handle import Call, CallState, CallStatus
from .plan import (
    WORKER_DEADLINE_SLACK_S,
    Plan,
    check_arguments,
    new_call_id,
    plan,
    resolve_target,
)
from .runtime import Runtime, get_runtime

__all__ = (
    "RETRY_BACKOFF_S",
    "collect",
    "note_attempts",
    "retry_delay_s",
    "retryable",
    "spawn",
    "spawn_encoded",
    "spilled_key",
    "ticket_for",
)

logger = logging.getLogger("flyjobs.dispatch")

#: Seconds a result URL stays valid past its call's worker deadline (clock skew, slow delivery).
_URL_SLACK_S = 60.0
#: Backoff (s) before the first retry of a function's own exception (``retry_on``); it doubles
#: with each further attempt, up to ``_MAX_BACKOFF_S``.
RETRY_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0


def spawn(
    fn: Callable[..., Any],
    options: CallOptions,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    detach: bool = False,
) -> Call[Any]:
    """Check and submit one call; return its handle.

    A function with a ``pool`` option runs the call on the pool's warm machines
    (`flyjobs._pools.runner`) instead of a machine of its own.

    :param detach: the call outlives this process (see `flyjobs._calls.detach`).
    :raises ConfigError: a setting the call needs (image, app) is missing, or ``detach`` without
        the object store or with the embedded emulator, or of a pooled function.
    :raises SerializationError: the function cannot be referenced by the worker, or an argument
        cannot be encoded, or the arguments are too large to travel inline (no machine is
        created).
    """
    call_plan = plan(fn, options, batch_id=None, detach=detach)
    runtime = get_runtime()
    pooled = call_plan.options.pool is not None
    if detach:
        if pooled:
            raise ConfigError(
                "a pooled call cannot be detached: pool machines end with this process;"
                " use fn.with_options(pool=None).spawn_detached(...)"
            )
        check_detachable(runtime)
    # Checked and encoded here, in the caller's thread, so a bad argument raises before
    # anything runs.
    check_arguments(fn, call_plan.fn_ref, args, kwargs)
    arguments = call_plan.encode(args, kwargs, spill=runtime.store is not None)
    return _submit(runtime, call_plan, arguments)


def spawn_encoded(
    fn_ref: str, sys_path: Sequence[str], arguments: bytes, options: CallOptions
) -> Call[Any]:
    """Submit one call of the function ``fn_ref`` whose arguments are already encoded (as a
    deployed scheduled function's payload carries them); return its handle.

    :raises ConfigError: a setting the call needs (image, app) is missing.
    """
    options, app, image = resolve_target(options)
    runtime = get_runtime()
    call_plan = Plan(
        fn_ref=fn_ref,
        sys_path=list(sys_path),
        arg_names=(),
        options=options,
        batch_id=None,
        app=app,
        image=image,
        output=resolve_output(options.output, runtime.settings.output, batch=False),
    )
    return _submit(runtime, call_plan, arguments)


def _submit(runtime: Runtime, call_plan: Plan, arguments: bytes) -> Call[Any]:
    state = CallState(new_call_id())
    done = threading.Event()

    async def run() -> Any:
        try:
            if call_plan.options.pool is not None:
                from .._pools.runner import pooled_call

                return await pooled_call(runtime, call_plan, arguments, state)
            return await _run(runtime, call_plan, arguments, state)
        finally:
            done.set()

    return Call(state, runtime.submit(run), done)


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


def ticket_for(
    runtime: Runtime,
    call_id: str,
    deadline: float,
    *,
    replies: bool = False,
    hold_s: float = NEXT_INPUT_WAIT_S,
    on_late: Callable[[], None] | None = None,
) -> ResultTicket:
    """Where an attempt's result is to be delivered (the inbox, or the store), valid a minute
    past the worker's own deadline; ``deadline`` is the client's (unix s). ``replies``: an
    inbox ticket whose delivery is answered with the machine's next input, held up to
    ``hold_s`` seconds. ``on_late``: called for each delivery to the inbox after the ticket
    was closed without a result."""
    expires_at = deadline + WORKER_DEADLINE_SLACK_S + _URL_SLACK_S
    return runtime.channel.ticket(
        call_id, expires_at, replies=replies, hold_s=hold_s, on_late=on_late
    )


def spilled_key(call_id: str) -> str:
    """The store key of a call's arguments too large to travel inline."""
    return f"args/{call_id}"


async def _run(runtime: Runtime, call_plan: Plan, arguments: bytes, state: CallState) -> Any:
    options = call_plan.options
    attempts = options.retries + 1
    spilled = runtime.store if call_plan.spilled(arguments) else None
    try:
        await check_secrets(runtime, call_plan)
        if spilled is not None:
            await spilled.put(spilled_key(state.call_id), arguments)
        for attempt in range(attempts):
            call_id = state.call_id if attempt == 0 else f"{state.call_id}-r{attempt}"
            try:
                value = await _attempt(runtime, call_plan, arguments, call_id, state)
            except Exception as exc:
                if attempt + 1 == attempts or not retryable(exc, options):
                    note_attempts(exc, attempt + 1)
                    raise
                logger.warning("%s failed (%s); retrying on a new machine", call_id, exc)
                await anyio.sleep(retry_delay_s(exc, attempt + 1))
                continue
            state.status = CallStatus.succeeded
            return value
        raise AssertionError("unreachable")  # pragma: no cover
    except anyio.get_cancelled_exc_class():
        state.status = CallStatus.cancelled
        raise
    except BaseException:
        state.status = CallStatus.failed
        raise
    finally:
        state.timings.finished_at = time.time()
        if spilled is not None and not _left_running(runtime, call_plan):
            await spilled.discard(spilled_key(state.call_id))


def _left_running(runtime: Runtime, call_plan: Plan) -> bool:
    """True when this process exits and leaves the call to run on (a detached call)."""
    return call_plan.detach and runtime.closing


async def _attempt(
    runtime: Runtime, call_plan: Plan, arguments: bytes, call_id: str, state: CallState
) -> Any:
    async with runtime.limiter:
        # The clocks start now, with the machine, not when the call was queued.
        state.status = CallStatus.creating
        started = time.time()
        state.timings.create_started_at = started
        deadline = started + call_plan.options.effective_timeout_s
        ticket = ticket_for(runtime, call_id, deadline)
        try:
            arguments_url = None
            if call_plan.spilled(arguments):
                assert runtime.store is not None  # checked when the call was made
                arguments_url = runtime.store.presign(
                    "GET",
                    spilled_key(state.call_id),
                    expires_at=deadline + WORKER_DEADLINE_SLACK_S,
                )
            payload = call_plan.payload(
                call_id,
                arguments,
                deadline=deadline,
                result_url=ticket.url,
                arguments_url=arguments_url,
            )
            machine = await create_machine(
                runtime, call_plan, call_id, payload, deadline, pulls=False
            )
            if call_plan.detach:
                ticket.keep()  # read (and deleted) through Call.from_id
                await _record_detached(runtime, call_plan, state.call_id, ticket, machine, deadline)
            state.machine_id = machine.id
            state.timings.created_at = time.time()
            state.status = CallStatus.running
            if call_plan.output == "live":
                runtime.live.watch(call_plan.app, machine.id, call_id, single=True)
            try:
                return await _supervise(runtime, call_plan, machine, ticket, state, deadline)
            finally:
                runtime.live.forget(call_plan.app, machine.id)
        finally:
            with anyio.CancelScope(shield=True):
                await ticket.aclose()


async def _record_detached(
    runtime: Runtime,
    call_plan: Plan,
    base_id: str,
    ticket: ResultTicket,
    machine: Machine,
    deadline: float,
) -> None:
    """Write a detached call's record before anyone can see its machine id, so a process that
    exits as soon as it has one leaves a call `Call.from_id` finds; without a record, the
    machine is destroyed."""
    try:
        with anyio.CancelScope(shield=True):
            await write_record(runtime, call_plan, base_id, ticket, machine.id, deadline)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await destroy(runtime, call_plan.app, machine.id)
        raise


async def _supervise(
    runtime: Runtime,
    call_plan: Plan,
    machine: Machine,
    ticket: ResultTicket,
    state: CallState,
    deadline: float,
) -> Any:
    app, options, call_id = call_plan.app, call_plan.options, ticket.call_id
    watch = ExitWatch(runtime, app, machine.id)
    try:
        with anyio.fail_after(max(deadline - time.time(), 0.001)):
            body = await collect(ticket, watch)
        state.timings.result_at = time.time()
    except TimeoutError:
        with anyio.CancelScope(shield=True):
            await ticket.look()
        if ticket.delivered:
            # The result came in as the deadline struck: a delivered result is never lost.
            body = await ticket.result()
            watch.after_result()
            return await outcome(runtime, call_plan, body, call_id, machine.id)
        watch.stop()
        await destroy(runtime, app, machine.id)
        raise tag(
            CallTimeoutError(
                f"call {call_id} did not finish within timeout_s={options.effective_timeout_s:g};"
                f" machine {machine.id} was destroyed"
            ),
            call_id,
            machine.id,
        ) from None
    except BaseException:
        # Cancelled, or the API failed while waiting: the machine must not outlive the call,
        # unless it is detached and this process is exiting.
        watch.stop()
        if not _left_running(runtime, call_plan):
            with anyio.CancelScope(shield=True):
                await destroy(runtime, app, machine.id)
        raise
    if body is None:
        error = await exit_error(runtime, app, machine.id, options, spoiled=ticket.spoiled)
        raise tag(error, call_id, machine.id)
    # The value is ready now; the watch sees the machine's exit to in the background.
    watch.after_result()
    return await outcome(runtime, call_plan, body, call_id, machine.id)


async def collect(ticket: ResultTicket, watch: ExitWatch) -> bytes | None:
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
