"""Detached calls: a call that outlives the process that made it.

``fn.spawn_detached(...)`` starts a call whose machine runs on to its own deadline when the
client exits, and whose result stays in the object store. When its machine is created, the
client writes a small record, ``calls/<call_id>`` in the store, naming the app, the machine and
the result's key; ``flyjobs.Call.from_id(call_id)``, in any process with the same settings and
at any later time, reads it to give the call's status, ``result(timeout_s)`` and ``cancel()``.

The result and the record are deleted once a `Call.from_id` handle has read the result (or
cancelled the call); a detached call whose result nobody reads is left to the bucket's
lifecycle rule or ``flyjobs gc`` (see the README).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import anyio
import msgpack  # type: ignore[import-untyped]

from ._call import Call, CallState, CallStatus
from ._channel import StoreTicket, result_key
from ._exceptions import (
    ConfigError,
    MachineCrashedError,
    NotFoundError,
    SerializationError,
    UnknownCallError,
)
from ._options import CallOptions

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._store import Store
    from .machines import Machine

__all__ = ("check_detachable", "from_id", "record_key", "write_record")

_RECORD_VERSION = 1


def record_key(call_id: str) -> str:
    """The store key of a detached call's record."""
    return f"calls/{call_id}"


def check_detachable(runtime: Runtime) -> None:
    """Raise unless a call made now could outlive this process.

    :raises ConfigError: results do not go through the object store, or the machines run on
        the embedded emulator (which ends with this process).
    """
    if runtime.settings.embedded:
        raise ConfigError(
            "a detached call must outlive this process, and the embedded emulator ends with"
            " it: set FLY_API_TOKEN to run on Fly (or point FLY_API_HOSTNAME at `flyjobs dev`)"
        )
    if runtime.channel.mode != "store" or runtime.store is None:
        raise ConfigError(
            "a detached call's result must outlive this process, so it goes through the object"
            " store: set FLYJOBS_STORE=s3://bucket/prefix (or BUCKET_NAME, from `fly storage"
            " create`) and FLYJOBS_RESULTS=store"
        )


async def write_record(
    store: Store,
    call_id: str,
    attempt_id: str,
    machine: Machine,
    options: CallOptions,
    deadline: float,
    ticket: str,
) -> None:
    """Record where a detached call runs and where its result will be (one PUT).

    :param attempt_id: the call id of this attempt (``<call_id>-r<n>`` on a retry), which keys
        its result.
    :param deadline: unix time (s) by which the client gives up on the call.
    :param ticket: the `flyjobs._protocol.ticket_id` its result is sealed for.
    """
    record = {
        "flyjobs": _RECORD_VERSION,
        "call_id": call_id,
        "attempt_id": attempt_id,
        "machine_id": machine.id,
        "deadline": deadline,
        "timeout_s": options.effective_timeout_s,
        "pickle": options.pickle,
        "ticket": ticket,
    }
    await store.put(record_key(call_id), msgpack.packb(record))


def from_id(call_id: str) -> Call[Any]:
    """A handle on the detached call `call_id`, made by this or another process.

    The handle's ``status`` is ``running`` until its outcome is known; ``result(timeout_s)``
    waits for it (the machine's exit, then the result in the store); ``cancel()`` destroys the
    machine. Reading the outcome, or cancelling, deletes the call's objects from the store.

    :raises ConfigError: no object store is configured.
    """
    from ._runtime import get_runtime

    runtime = get_runtime()
    if runtime.store is None:
        raise ConfigError(
            "Call.from_id finds detached calls in the object store: set FLYJOBS_STORE (or"
            " BUCKET_NAME) as the process that made the call had it"
        )
    store = runtime.store
    state = CallState(call_id, status=CallStatus.running)
    done = threading.Event()

    async def run() -> Any:
        try:
            return await _reattach(runtime, store, call_id, state)
        except anyio.get_cancelled_exc_class():
            state.status = CallStatus.cancelled
            raise
        finally:
            done.set()

    return Call(state, runtime.submit(run), done)


async def _reattach(runtime: Runtime, store: Store, call_id: str, state: CallState) -> Any:
    from . import _dispatch
    from ._plan import Plan
    from ._supervise import destroy, outcome

    with anyio.CancelScope(shield=True):
        # A cancel() this early still finds the machine to destroy (at the next await).
        data = await store.get(record_key(call_id))
    if data is None:
        raise UnknownCallError(
            f"no detached call {call_id} in the store {store.config.url}: it was not made"
            " detached with this store, or its result was already read, or it was cancelled"
        )
    record = _decode_record(data)
    app = runtime.app or runtime.settings.require("app")
    state.machine_id = record["machine_id"]
    options = CallOptions(timeout_s=record["timeout_s"], pickle=record["pickle"])
    plan = Plan(
        fn_ref="",
        sys_path=(),
        arg_names=(),
        options=options,
        batch_id=None,
        app=app,
        image="",
        detach=True,
    )
    attempt_id = record["attempt_id"]
    ticket = StoreTicket(
        store,
        attempt_id,
        expires_at=record["deadline"] + 60,
        seal_key=runtime.result_key,
        bound_to=record["ticket"],
    )
    ticket.keep = True
    machine_id: str = record["machine_id"]
    try:
        if await ticket.fetch():
            body = await ticket.result()
            value = await outcome(runtime, plan, body, call_id, machine_id)
        else:
            machine = await _machine(runtime, app, machine_id, call_id)
            value = await _dispatch._supervise(
                runtime, plan, machine, ticket, state, record["deadline"]
            )
    except anyio.get_cancelled_exc_class():
        if not runtime.closing:  # cancelled by its handle: the call is over for everyone
            with anyio.CancelScope(shield=True):
                await destroy(runtime, app, machine_id)
            await store.discard([result_key(attempt_id), record_key(call_id)])
        raise
    except BaseException:
        state.status = CallStatus.failed
        if not runtime.closing:  # its error was read
            await store.discard([result_key(attempt_id), record_key(call_id)])
        raise
    state.status = CallStatus.succeeded
    await store.discard([result_key(attempt_id), record_key(call_id)])
    return value


async def _machine(runtime: Runtime, app: str, machine_id: str, call_id: str) -> Machine:
    try:
        return await runtime.client.get_machine(app, machine_id)
    except NotFoundError:
        raise MachineCrashedError(
            f"detached call {call_id}: machine {machine_id} is gone and left no result",
            exit_code=None,
        ) from None


def _decode_record(data: bytes) -> dict[str, Any]:
    try:
        record = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise SerializationError(f"not a flyjobs call record: {exc}") from exc
    if not isinstance(record, dict) or record.get("flyjobs") != _RECORD_VERSION:
        raise SerializationError("not a flyjobs call record of this version")
    return record
