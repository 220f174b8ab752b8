"""Supervising one machine: create it (throttling waited out), watch it exit, read its results,
explain a death without a result, destroy it.

Shared by single calls (`flyjobs._calls.dispatch`) and batches (`flyjobs._batches.batch`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

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
    TransportError,
    WaitTimeoutError,
)
from .._machine_side.run import TAIL_CHARS
from .._output.call_lines import shown
from .._output.live import cut_marker
from .._wire.protocol import (
    EXIT_BAD_PAYLOAD,
    EXIT_DEADLINE,
    EXIT_DELIVERY_FAILED,
    EXIT_IMPORT_FAILED,
    EXIT_OK,
    EXIT_RESULT_REFUSED,
    EXIT_RESULT_TOO_LARGE,
    MAX_INBOX_RESULT_BYTES,
    RESULT_KEY_ENV,
)
from .._wire.remote_errors import rebuild_exception
from .._wire.result_envelope import ResultEnvelope, decode_result
from ..machines import Machine, paced_already, patient_until
from .plan import Plan
from .runtime import Runtime

__all__ = (
    "EXIT_GRACE_S",
    "ExitWatch",
    "create_machine",
    "check_secrets",
    "destroy",
    "exit_error",
    "outcome",
    "pace_create",
    "show_output",
    "tag",
    "trusted_modules",
    "value_of",
)

logger = logging.getLogger("flyjobs.dispatch")

#: The Machines API action (rate-limit bucket) of a create.
_CREATE = "create_machine"
#: Seconds a machine may take to exit after delivering its last result before it is destroyed.
EXIT_GRACE_S = 10.0


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
    `create_machine`'s ``paced``)."""
    await runtime.client.pace(_CREATE, app)


async def create_machine(
    runtime: Runtime,
    plan: Plan,
    name: str,
    payload: bytes,
    deadline: float,
    *,
    pulls: bool,
    paced: bool = False,
    restart: Callable[[], Awaitable[tuple[bytes, float]]] | None = None,
) -> Machine:
    """Create the machine ``name`` carrying ``payload`` as its first call.

    Throttling (429) is waited out up to ``deadline`` (unix s), the first call's own deadline,
    and never counts as a failure. A machine that ``pulls`` more inputs has no fixed deadline.
    ``paced``: the caller took this create's turn with `pace_create` already.

    ``restart``: the first call is a batch input, not taken until a machine exists, so its
    clock must not run while the API throttles: throttling is waited out however long it
    lasts (backing off, then paced), and each create sent again carries the payload and
    deadline ``await restart()`` gives, with the input's clocks started anew.

    :raises CallTimeoutError: the API throttled creates until the deadline.
    :raises APIError, TransportError: the create failed; a note names the likely setting.
    """
    while True:
        config = plan.machine_config(name, payload, deadline=None if pulls else deadline)
        now = anyio.current_time()
        # With restart, a 429 comes back here at once: the create is sent again with a new
        # payload, not as it was.
        patience = now if restart is not None else now + max(deadline - time.time(), 0.0)
        try:
            paced_ = paced_already(_CREATE, plan.app) if paced else contextlib.nullcontext()
            with patient_until(patience), paced_:
                return await runtime.client.create_machine(
                    plan.app, config, name=name, region=plan.options.region
                )
        except RateLimitedError as exc:
            if restart is None:
                raise CallTimeoutError(
                    f"call {name}: the Machines API throttled machine creation (429) until the"
                    f" call's timeout_s={plan.options.effective_timeout_s:g} passed;"
                    " raise timeout_s or lower max_machines"
                ) from exc
            await runtime.client.pace_after_throttling(_CREATE, plan.app, exc.retry_after_s)
            payload, deadline = await restart()
            paced = True
        except (APIError, TransportError) as exc:
            _add_hint(exc, runtime, plan.app)
            raise


class ExitWatch:
    """Waits, in the background from its creation on, for a machine to stop, be destroyed, or
    fail to launch.

    One ``/wait`` serves both ends of a machine's life: it tells the caller that the machine
    died without a result, and once the caller has its last result (`after_result`) the machine
    gets ``EXIT_GRACE_S`` to exit by itself before it is destroyed. `stop` ends the watch when
    the caller destroys the machine itself.
    """

    def __init__(self, runtime: Runtime, app: str, machine_id: str) -> None:
        self.exited = anyio.Event()
        self.error: FlyjobsError | None = None
        #: unix time (s) the machine was seen stopped or destroyed
        self.exited_at: float | None = None
        self._runtime = runtime
        self._app = app
        self.machine_id = machine_id
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


def tag(exc: BaseException, call_id: str, machine_id: str | None) -> BaseException:
    """``exc`` marked with the call (and machine) it came from, when it is a `CallError`."""
    if isinstance(exc, CallError):
        exc.call_id = call_id
        exc.machine_id = machine_id
    return exc
