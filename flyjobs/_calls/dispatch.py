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

from .._code.bundle import Bundle
from .._declare.options import CallOptions
from .._declare.output_choice import resolve_output
from .._exceptions import ConfigError
from .._pools.runner import pooled_call
from .._trace.spans import start_call
from .attempt import Attempt, MachineRun, Retry, check_secrets, left_running, spilled_key
from .detach import check_detachable, write_record
from .handle import Call, CallState, CallStatus
from .plan import (
    Plan,
    check_arguments,
    new_call_id,
    plan,
    resolve_target,
)
from .runtime import Runtime, get_runtime

__all__ = ("run_attempts", "spawn", "spawn_encoded")

logger = logging.getLogger("flyjobs.dispatch")


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
    arguments = call_plan.encode(args, kwargs, spill=runtime.channel.spills)
    return _submit(runtime, call_plan, arguments)


def spawn_encoded(
    fn_ref: str,
    sys_path: Sequence[str],
    arguments: bytes,
    options: CallOptions,
    *,
    code: Bundle | None = None,
) -> Call[Any]:
    """Submit one call of the function ``fn_ref`` whose arguments are already encoded (as a
    deployed scheduled function's payload carries them); return its handle.

    :param code: the code bundle the call carries (the deployed function's), if any.

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
        code=code,
        seal_key=runtime.result_key,
    )
    return _submit(runtime, call_plan, arguments)


def _submit(runtime: Runtime, call_plan: Plan, arguments: bytes) -> Call[Any]:
    state = CallState(new_call_id())
    # Here, in the caller's thread: the app's span around the call is the call span's parent.
    trace = state.trace = start_call(
        call_plan.fn_ref, state.call_id, call_plan.image, start_s=state.timings.submitted_at
    )
    done = threading.Event()

    async def run() -> Any:
        try:
            if call_plan.options.pool is not None:
                value = await pooled_call(runtime, call_plan, arguments, state)
            else:
                value = await run_attempts(runtime, call_plan, arguments, state)
        except BaseException as exc:
            if trace is not None:
                trace.end(exc)
            raise
        else:
            if trace is not None:
                trace.end()
            return value
        finally:
            done.set()

    return Call(state, runtime.submit(run), done)


async def run_attempts(
    runtime: Runtime, call_plan: Plan, arguments: bytes, state: CallState
) -> Any:
    """Run one call on machines of its own, one per attempt (within ``retries``); its value.

    Spilled arguments are put in the store once, and deleted when the call is over (unless
    this process exits and leaves a detached call to run on).
    """
    retry = Retry(call_plan.options)
    args_key = spilled_key(state.call_id)
    spilled = call_plan.spilled(arguments)
    try:
        await check_secrets(runtime, call_plan)
        if spilled:
            await runtime.channel.put_arguments(args_key, arguments)
        attempts = 0
        while True:
            attempts += 1
            call_id = state.call_id if attempts == 1 else f"{state.call_id}-r{attempts - 1}"
            try:
                value = await _attempt(runtime, call_plan, arguments, call_id, state, attempts)
            except Exception as exc:
                delay_s = retry.again(exc, attempts)
                if delay_s is None:
                    raise
                logger.warning("%s failed (%s); retrying on a new machine", call_id, exc)
                await anyio.sleep(delay_s)
                continue
            state.status = CallStatus.succeeded
            return value
    except anyio.get_cancelled_exc_class():
        state.status = CallStatus.cancelled
        raise
    except BaseException:
        state.status = CallStatus.failed
        raise
    finally:
        state.timings.finished_at = time.time()
        if spilled and not left_running(runtime, call_plan):
            await runtime.channel.discard_arguments(args_key)


async def _attempt(
    runtime: Runtime,
    call_plan: Plan,
    arguments: bytes,
    call_id: str,
    state: CallState,
    number: int,
) -> Any:
    async with runtime.limiter:
        # The clocks start now, with the machine, not when the call was queued.
        state.status = CallStatus.creating
        state.timings.create_started_at = time.time()
        attempt = Attempt.open(
            runtime,
            call_plan,
            call_id,
            arguments,
            args_key=spilled_key(state.call_id),
            trace=state.trace,
            number=number,
        )
        try:
            payload = attempt.payload(call_plan, arguments)
            run = await MachineRun.create(
                runtime, call_plan, call_id, payload, attempt.deadline, pulls=False
            )
            if call_plan.detach:
                attempt.ticket.keep()  # read (and deleted) through Call.from_id
                await _record_detached(runtime, call_plan, state.call_id, attempt, run)
            state.machine_id = run.id
            state.timings.created_at = time.time()
            state.status = CallStatus.running
            if call_plan.output == "live":
                runtime.live.watch(call_plan.app, run.id, call_id, single=True)
            try:
                return await run.value(attempt, state)
            finally:
                runtime.live.forget(call_plan.app, run.id)
        finally:
            await attempt.close()


async def _record_detached(
    runtime: Runtime, call_plan: Plan, base_id: str, attempt: Attempt, run: MachineRun
) -> None:
    """Write a detached call's record before anyone can see its machine id, so a process that
    exits as soon as it has one leaves a call `Call.from_id` finds; without a record, the
    machine is destroyed."""
    try:
        with anyio.CancelScope(shield=True):
            await write_record(
                runtime, call_plan, base_id, attempt.ticket, run.id, attempt.deadline
            )
    except BaseException:
        await run.destroy()
        raise
