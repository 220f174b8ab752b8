"""One call's life: encode → create the machine → wait → collect result and exit → clean up.

Every exit path (value, error, timeout, cancellation, interpreter exit) leaves the machine
destroyed or on its way to ``destroyed`` by its own ``auto_destroy``.
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import logging
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio

from ._call import Call, CallState, CallStatus
from ._call_envelope import encode_arguments, encode_call
from ._channel import StoreTicket, close_ticket, look_after_exit
from ._detach import check_detachable, write_record
from ._exceptions import (
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
from ._inbox import Ticket
from ._jobs import client_identity
from ._live import cut_marker
from ._options import CallOptions
from ._protocol import (
    EXIT_BAD_PAYLOAD,
    EXIT_DEADLINE,
    EXIT_DELIVERY_FAILED,
    EXIT_IMPORT_FAILED,
    EXIT_OK,
    EXIT_RESULT_TOO_LARGE,
    MAX_INBOX_RESULT_BYTES,
    META_BATCH_ID,
    META_CALL_ID,
    META_CLIENT,
    META_DEADLINE,
    META_FUNCTION,
    PAYLOAD_GUEST_PATH,
    importing_function,
)
from ._reference import function_reference
from ._remote_errors import rebuild_exception
from ._result_envelope import decode_result
from ._runtime import Runtime, current_settings, get_runtime
from .machines import Machine, MachineConfig
from .worker import TAIL_CHARS

__all__ = ("MAX_INLINE_PAYLOAD_BYTES", "new_batch_id", "spawn", "spawn_batch")

logger = logging.getLogger("flyjobs.dispatch")

#: Largest encoded arguments sent inline in ``files[].raw_value`` (before base64, which adds a
#: third). Fly does not document a config size limit; 1 MiB keeps the create request
#: well-behaved. Larger arguments travel through the object store (``FLYJOBS_STORE``): the
#: payload then carries a presigned URL the worker GETs them from.
MAX_INLINE_PAYLOAD_BYTES = 1024 * 1024
#: Seconds a machine may take to exit after delivering its result before it is destroyed.
_EXIT_GRACE_S = 10.0
#: Seconds the worker's own deadline is set after the client's, so the client decides first.
_WORKER_DEADLINE_SLACK_S = 5.0
_WORKER_CMD = ["python", "-m", "flyjobs.worker"]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything a call needs, fixed before it is submitted."""

    call_id: str
    fn_ref: str
    sys_path: Sequence[str]
    arguments: bytes  # encoded once, when the call is made
    options: CallOptions
    batch_id: str | None
    app: str
    image: str
    #: the call outlives this process: its machine runs on and its result stays in the store
    detach: bool = False


def new_call_id() -> str:
    """A fresh call id, usable as a machine name (lowercase letters, digits, dashes)."""
    return "fj-" + secrets.token_hex(8)


def new_batch_id() -> str:
    """A fresh batch id; the batch's call ids are ``<batch_id>-<index>``."""
    return "fjb-" + secrets.token_hex(6)


def spawn(
    fn: Callable[..., Any],
    options: CallOptions,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    detach: bool = False,
) -> Call[Any]:
    """Check and submit one call; return its handle.

    :param detach: the call outlives this process (see `flyjobs._detach`).
    :raises ConfigError: a setting the call needs (image, app) is missing, or ``detach`` without
        the object store or with the embedded emulator.
    :raises SerializationError: the function cannot be referenced by the worker, or an argument
        cannot be encoded, or the arguments are too large to travel inline (no machine is
        created).
    """
    return spawn_batch(fn, options, [(args, kwargs)], batch_id=None, detach=detach)[0]


def spawn_batch(
    fn: Callable[..., Any],
    options: CallOptions,
    inputs: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]],
    *,
    batch_id: str | None,
    detach: bool = False,
) -> list[Call[Any]]:
    """Check every input, then submit one call per input; return their handles in order.

    Within a batch the call ids are deterministic (``<batch_id>-<index>``) and name the
    machines. Every input is encoded before the first call is submitted, so a bad one raises
    before any machine exists.

    :raises ConfigError, SerializationError: as :func:`spawn`.
    """
    importing = importing_function()
    if importing is not None:
        raise ConfigError(
            f"a remote call was made while the machine imported {importing}: code at the top"
            " level of a module runs again on every machine that imports it, so each machine"
            ' would start the next; put the calls under `if __name__ == "__main__":`'
        )
    fn_ref, sys_path = function_reference(fn)
    sys_path = _portable([*sys_path, *_import_root(fn_ref)])
    arg_names = _positional_names(fn)
    settings = current_settings()
    options = options.merged(settings.defaults)
    # Everything missing for Fly is one ConfigError saying where to set each, before any machine.
    settings.check_fly(app=options.app, image=options.image)
    runtime = get_runtime()
    image = options.image or runtime.image
    app = options.app or runtime.app
    if image is None or app is None:
        raise AssertionError("check_fly lets no call through without an app and an image")
    if detach:
        check_detachable(runtime)
    plans = []
    for index, (args, kwargs) in enumerate(inputs):
        call_id = f"{batch_id}-{index}" if batch_id else new_call_id()
        # Encoded here, in the caller's thread, so a bad argument raises before anything runs.
        try:
            arguments = _encode_arguments(
                fn_ref, args, kwargs, options.pickle, arg_names, spill=runtime.store is not None
            )
        except SerializationError as exc:
            if batch_id is None:
                raise
            raise SerializationError(f"input {index}: {exc}") from exc.__cause__
        plans.append(
            _Plan(call_id, fn_ref, sys_path, arguments, options, batch_id, app, image, detach)
        )
    return [_submit(runtime, plan) for plan in plans]


def _submit(runtime: Runtime, plan: _Plan) -> Call[Any]:
    state = CallState(plan.call_id)
    done = threading.Event()

    async def run() -> Any:
        try:
            return await _run(runtime, plan, state)
        finally:
            done.set()

    return Call(state, runtime.submit(run), done)


def _import_root(fn_ref: str) -> list[str]:
    """The folder the function's top-level package was imported from.

    A local machine (the emulator) runs in this process's working directory, from which a module
    imported through a path pytest or the user added is not importable; naming the folder lets
    the worker find it. On Fly the folder does not exist in the image and the worker skips it.
    """
    module = sys.modules.get(fn_ref.partition(":")[0])
    path = getattr(module, "__file__", None)
    if module is None or not path:
        return []
    root = os.path.dirname(os.path.abspath(path))
    depth = module.__name__.count(".") + (os.path.basename(path) == "__init__.py")
    for _ in range(depth):
        root = os.path.dirname(root)
    return [root]


def _portable(roots: list[str]) -> list[str]:
    """Import roots as the worker should try them: each absolute path (a local machine runs on
    this host), then, for one inside the working directory, the same path relative to it. An
    image copies the project to its WORKDIR, where the worker starts, so ``examples/`` here is
    ``/app/examples`` there."""
    cwd = os.getcwd()
    portable: list[str] = []
    for root in roots:
        relative = os.path.relpath(root, cwd)
        for entry in (root, relative):
            if entry not in portable and entry != "." and not entry.startswith(".."):
                portable.append(entry)
    return portable


def _positional_names(fn: Callable[..., Any]) -> list[str]:
    """Names of ``fn``'s positional parameters, so errors can name an argument."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in kinds]


def _encode_arguments(
    fn_ref: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    pickle: bool,
    arg_names: Sequence[str],
    *,
    spill: bool,
) -> bytes:
    arguments = encode_arguments(args, kwargs, pickle=pickle, arg_names=arg_names)
    if len(arguments) > MAX_INLINE_PAYLOAD_BYTES and not spill:
        raise SerializationError(
            f"the arguments of {fn_ref} encode to {len(arguments) / 1048576:.1f} MiB, over the"
            f" {MAX_INLINE_PAYLOAD_BYTES // 1048576} MiB (MAX_INLINE_PAYLOAD_BYTES) that travel"
            " inside the machine config; configure an object store (FLYJOBS_STORE, or"
            " BUCKET_NAME from `fly storage create`) to send larger ones through it, or pass"
            " large data by reference (a URL or object-store key)"
        )
    return arguments


def _spilled(plan: _Plan) -> bool:
    return len(plan.arguments) > MAX_INLINE_PAYLOAD_BYTES


def _arguments_key(plan: _Plan) -> str:
    return f"args/{plan.call_id}"


def _payload(
    plan: _Plan, call_id: str, *, deadline: float, result_url: str, arguments_url: str | None
) -> bytes:
    return encode_call(
        plan.fn_ref,
        call_id=call_id,
        deadline=deadline,
        result_url=result_url,
        batch_id=plan.batch_id,
        sys_path=plan.sys_path,
        pickle=plan.options.pickle,
        arguments=b"" if arguments_url else plan.arguments,
        arguments_url=arguments_url,
    )


async def _run(runtime: Runtime, plan: _Plan, state: CallState) -> Any:
    options = plan.options
    attempts = options.retries + 1
    spilled = runtime.store if _spilled(plan) else None
    try:
        try:
            await runtime.check_secrets(plan.app, options.secrets)
        except (APIError, TransportError) as exc:
            _add_hint(exc, runtime, plan.app)
            raise
        if spilled is not None:
            await spilled.put(_arguments_key(plan), plan.arguments)
        for attempt in range(attempts):
            call_id = plan.call_id if attempt == 0 else f"{plan.call_id}-r{attempt}"
            try:
                value = await _attempt(runtime, plan, call_id, state)
            except (OutOfMemoryError, CallTimeoutError):
                raise  # the same machine size or deadline would fail again
            except (MachineCrashedError, ServerError, RateLimitedError, TransportError) as exc:
                # Failures of the machine or the platform; a refused request (4xx) would only
                # be refused again.
                if attempt + 1 == attempts:
                    raise
                logger.warning("%s failed (%s); retrying on a new machine", call_id, exc)
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
        if spilled is not None and not _left_running(runtime, plan):
            await spilled.discard(_arguments_key(plan))


def _left_running(runtime: Runtime, plan: _Plan) -> bool:
    """True when this process exits and leaves the call to run on (a detached call)."""
    return plan.detach and runtime.closing


def _machine_config(
    plan: _Plan, call_id: str, payload: bytes, worker_deadline: float
) -> MachineConfig:
    options = plan.options
    return MachineConfig.model_validate(
        {
            "image": plan.image,
            "auto_destroy": True,
            "restart": {"policy": "no"},
            **options.guest(),
            "env": dict(options.env),
            "init": {"cmd": _WORKER_CMD},
            "files": [
                {
                    "guest_path": PAYLOAD_GUEST_PATH,
                    "raw_value": base64.b64encode(payload).decode("ascii"),
                }
            ],
            "metadata": {
                META_CALL_ID: call_id,
                META_BATCH_ID: plan.batch_id or "",
                META_FUNCTION: plan.fn_ref,
                # What `flyjobs gc` needs to tell a stray.
                META_DEADLINE: str(math.ceil(worker_deadline)),
                # A detached call outlives its client: `flyjobs gc` judges it by its deadline.
                META_CLIENT: "" if plan.detach else client_identity(),
            },
        }
    )


def _ticket(runtime: Runtime, call_id: str, deadline: float) -> Ticket | StoreTicket:
    """Where this attempt's result is to be delivered; valid a minute past the worker's own
    deadline."""
    expires_at = deadline + _WORKER_DEADLINE_SLACK_S + 60
    if runtime.channel.mode == "store":
        assert runtime.store is not None
        return StoreTicket(
            runtime.store, call_id, expires_at=expires_at, seal_key=runtime.result_key
        )
    return runtime.inbox.expect(call_id, ttl_s=expires_at - time.time())


async def _attempt(runtime: Runtime, plan: _Plan, call_id: str, state: CallState) -> Any:
    app, options = plan.app, plan.options
    timeout_s = options.timeout
    ticket: Ticket | StoreTicket | None = None
    try:
        async with runtime.limiter:
            state.status = CallStatus.creating
            started = time.time()
            state.timings.create_started_at = started
            deadline = started + timeout_s
            worker_deadline = deadline + _WORKER_DEADLINE_SLACK_S
            ticket = _ticket(runtime, call_id, deadline)
            arguments_url = None
            if _spilled(plan):
                assert runtime.store is not None  # checked when the call was made
                arguments_url = runtime.store.presign(
                    "GET", _arguments_key(plan), expires_at=worker_deadline
                )
            payload = _payload(
                plan,
                call_id,
                deadline=worker_deadline,
                result_url=ticket.url,
                arguments_url=arguments_url,
            )
            config = _machine_config(plan, call_id, payload, worker_deadline)
            try:
                machine = await runtime.client.create_machine(
                    app, config, name=call_id, region=options.region
                )
            except (APIError, TransportError) as exc:
                _add_hint(exc, runtime, app)
                raise
            if plan.detach:
                assert isinstance(ticket, StoreTicket)
                ticket.keep = True  # read (and deleted) through Call.from_id
                await _record_detached(runtime, plan, call_id, machine, deadline)
            state.machine_id = machine.id
            state.timings.created_at = time.time()
            state.status = CallStatus.running
            runtime.live.watch(app, machine.id, call_id)
            try:
                return await _supervise(runtime, plan, machine, ticket, state, deadline)
            finally:
                runtime.live.forget(app, machine.id)
    finally:
        if ticket is not None:
            await close_ticket(ticket)


async def _record_detached(
    runtime: Runtime, plan: _Plan, call_id: str, machine: Machine, deadline: float
) -> None:
    """Write a detached call's record before anyone can see its machine id, so a process that
    exits as soon as it has one leaves a call `Call.from_id` finds; without a record, the
    machine is destroyed."""
    assert runtime.store is not None
    try:
        with anyio.CancelScope(shield=True):
            await write_record(
                runtime.store, plan.call_id, call_id, machine, plan.options, deadline
            )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _destroy(runtime, plan.app, machine.id)
        raise


async def _supervise(
    runtime: Runtime,
    plan: _Plan,
    machine: Machine,
    ticket: Ticket | StoreTicket,
    state: CallState,
    deadline: float,
) -> Any:
    app, options = plan.app, plan.options
    watch = _ExitWatch(runtime, app, machine.id, state)
    runtime.background(watch.run)
    try:
        with anyio.fail_after(max(deadline - time.time(), 0.001)):
            body = await _collect(ticket, watch, state)
    except TimeoutError:
        if isinstance(ticket, StoreTicket):
            with anyio.CancelScope(shield=True):
                await ticket.fetch()
        if ticket.delivered:
            # The result came in as the deadline struck: a delivered result is never lost.
            body = await ticket.result()
            watch.after_result()
            return await _outcome(runtime, plan, machine.id, body, state)
        watch.stop()
        await _destroy(runtime, app, machine.id)
        raise _tag(
            CallTimeoutError(
                f"call {state.call_id} did not finish within timeout_s={options.timeout:g};"
                f" machine {machine.id} was destroyed"
            ),
            state,
        ) from None
    except BaseException:
        # Cancelled, or the API failed while waiting: the machine must not outlive the call,
        # unless it is detached and this process is exiting.
        watch.stop()
        if not _left_running(runtime, plan):
            with anyio.CancelScope(shield=True):
                await _destroy(runtime, app, machine.id)
        raise
    if body is None:
        raise _tag(await _exit_error(runtime, app, machine.id, options), state)
    # The value is ready now; the watch sees the machine's exit to in the background.
    watch.after_result()
    return await _outcome(runtime, plan, machine.id, body, state)


async def _collect(
    ticket: Ticket | StoreTicket, watch: _ExitWatch, state: CallState
) -> bytes | None:
    """The result body as soon as it is in, or None if the machine exited without one.

    Both are awaited together: a machine that dies never leaves the call waiting for a result
    until its timeout.
    """
    body: bytes | None = None

    async with anyio.create_task_group() as tg:

        async def result() -> None:
            nonlocal body
            body = await ticket.result()
            state.timings.result_at = time.time()
            tg.cancel_scope.cancel()

        async def exit_() -> None:
            await watch.exited.wait()
            if watch.error is not None:
                raise watch.error
            await look_after_exit(ticket)
            tg.cancel_scope.cancel()

        tg.start_soon(result)
        tg.start_soon(exit_)
    # A result found just as the exit branch ended the wait still counts.
    return body if body is not None or not ticket.delivered else await ticket.result()


class _ExitWatch:
    """Waits, in the background from its creation on, for a machine to stop or be destroyed.

    One ``/wait`` serves both ends of a call: it tells the call that a machine died without a
    result, and once the call has its result (`after_result`) the machine gets
    ``_EXIT_GRACE_S`` to exit by itself before it is destroyed. `stop` ends the watch when the
    call destroys the machine itself.
    """

    def __init__(self, runtime: Runtime, app: str, machine_id: str, state: CallState) -> None:
        self.exited = anyio.Event()
        self.error: FlyjobsError | None = None
        self._runtime = runtime
        self._app = app
        self._machine_id = machine_id
        self._state = state
        self._scope = anyio.CancelScope()
        self._result_in = False

    def after_result(self) -> None:
        """The call has its value: destroy the machine if it has not exited in the grace time."""
        self._result_in = True
        self._scope.deadline = anyio.current_time() + _EXIT_GRACE_S

    def stop(self) -> None:
        """The call is destroying the machine itself: stop watching."""
        self._scope.cancel()

    async def run(self) -> None:
        exited = False
        try:
            with self._scope:
                await self._runtime.client.wait(
                    self._app, self._machine_id, ("stopped", "destroyed"), timeout_s=24 * 3600.0
                )
                exited = True
                self._state.timings.exited_at = time.time()
        except (APIError, TransportError, WaitTimeoutError) as exc:
            self.error = exc
        except BaseException:
            # The runtime is shutting down: a machine whose call already returned is ours alone.
            if self._result_in:
                with anyio.CancelScope(shield=True):
                    await _destroy(self._runtime, self._app, self._machine_id)
            raise
        finally:
            self.exited.set()
        if self._result_in and not exited:
            await _destroy(self._runtime, self._app, self._machine_id)


def _trusted_modules(fn_ref: str) -> Callable[[str], bool]:
    """Which modules not imported yet a result may import: the function's own module and those
    of its top-level package, never one the result merely names (see docs/threat-model.md)."""
    module = fn_ref.partition(":")[0]
    package = module.partition(".")[0]

    def may_import(name: str) -> bool:
        return name == module or name == package or name.startswith(f"{package}.")

    return may_import


async def _outcome(
    runtime: Runtime, plan: _Plan, machine_id: str, body: bytes, state: CallState
) -> Any:
    fn_ref = plan.fn_ref
    result = decode_result(body)
    printed = bool(result.stdout_tail or result.stderr_tail)
    if not await runtime.live.finish(plan.app, machine_id, printed=printed):
        # The lines did not come live: show the tail the result carried.
        _echo_output(state.call_id, result.stdout_tail, result.stderr_tail)
    # Decoded by the call's own options, never by what the delivered envelope says.
    pickled, may_import = plan.options.pickle, _trusted_modules(fn_ref)
    error = result.error
    if result.ok or error is None:
        return result.value(pickled=pickled, may_import=may_import)
    if error.stage in ("import", "arguments"):
        what = fn_ref if error.stage == "import" else f"a class in the arguments of {fn_ref}"
        raise _tag(RemoteImportError(what, error.type, error.message, error.traceback), state)
    raise _tag(rebuild_exception(error, pickled=pickled, may_import=may_import), state)


def _echo_output(call_id: str, stdout: str, stderr: str) -> None:
    # Each line marked with the call it came from; a tail that fills the worker's limit is cut.
    for text, stream in ((stdout, sys.stdout), (stderr, sys.stderr)):
        if text:
            cut = len(text) >= TAIL_CHARS
            lines = [f"[{call_id}] {line}\n" for line in text.splitlines()[cut:]]
            stream.write((cut_marker(call_id) + "\n" if cut else "") + "".join(lines))
            stream.flush()


async def _exit_error(
    runtime: Runtime, app: str, machine_id: str, options: CallOptions
) -> FlyjobsError:
    exit_event = await _exit_event(runtime, app, machine_id)
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
    reasons = {
        EXIT_OK: "the worker exited before it delivered one (did the function call os._exit?)",
        EXIT_BAD_PAYLOAD: "the worker could not read its payload (is the image's flyjobs"
        " version the same as this one?)",
        EXIT_IMPORT_FAILED: "the worker could not import the function (is your code in the image?)",
        EXIT_DELIVERY_FAILED: "the worker could not deliver its result (can machines reach"
        " this host? see FLYJOBS_INBOX_HOST)",
    }
    what = reasons.get(code if isinstance(code, int) else -1, "it crashed")
    shown = "unknown" if code is None else str(code)
    return MachineCrashedError(
        f"machine {machine_id} exited with code {shown} without a result: {what}",
        exit_code=code if isinstance(code, int) else None,
        output_tail=tail,
    )


async def _exit_event(runtime: Runtime, app: str, machine_id: str) -> dict[str, Any] | None:
    try:
        machine = await runtime.client.get_machine(app, machine_id)
    except NotFoundError:
        return None  # destroyed and past retention: the exit code is no longer known
    for event in machine.events or ():
        if event.type == "exit" and event.exit_event is not None:
            return event.exit_event.model_dump()
    return None


async def _log_tail(runtime: Runtime, app: str, machine_id: str, lines: int = 20) -> str:
    try:
        return await runtime.client.log_tail(app, machine_id, lines=lines)
    except (APIError, TransportError):
        return ""


async def _destroy(runtime: Runtime, app: str, machine_id: str) -> None:
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


def _tag(exc: BaseException, state: CallState) -> BaseException:
    if isinstance(exc, CallError):
        exc.call_id = state.call_id
        exc.machine_id = state.machine_id
    return exc
