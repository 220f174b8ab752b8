"""Detached calls: a call that outlives the process that made it.

``fn.spawn_detached(...)`` starts a call whose machine runs on to its own deadline when the
client exits, and whose result stays in the object store. When its machine is created, the
client writes a small record, ``calls/<call_id>`` in the store, naming the app, the machine,
the result's key and how to decode it; ``flyjobs.Call.from_id(call_id)``, in any process with
the same settings and at any later time, reads it to give the call's status, ``result(timeout_s)``
and ``cancel()``.

Whoever can write the bucket can write a record, and a record decides what the caller decodes
(``pickle``), which result it takes and which machine ``cancel()`` destroys: every record is
sealed with the result key, bound to its call id, and a record that fails its seal is refused
before anything is read, decoded or destroyed (docs/threat-model.md).

The result is deleted once a `Call.from_id` handle has read it (or cancelled the call); the
record then stays, marked with the outcome, so a later ``from_id`` says the result was already
read. Records, and detached results nobody reads, are left to the bucket's lifecycle rule or
``flyjobs gc`` (see docs/concepts/results.md).
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import anyio
import msgpack  # type: ignore[import-untyped]

from .._exceptions import (
    CallCancelledError,
    ConfigError,
    NotFoundError,
    SerializationError,
    UnknownCallError,
)
from .._results.channel import ResultTicket, StoreTicket, result_key
from .._wire.result_envelope import decode_result
from .._wire.seal import RESULT_KEY_ENV, open_call_record, seal_call_record
from .attempt import Attempt, MachineRun, destroy, outcome
from .handle import Call, CallState, CallStatus
from .plan import Plan, from_record
from .runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from .._results.store import Store

__all__ = ("DetachedCall", "check_detachable", "from_id", "record_key", "write_record")

_RECORD_VERSION = 2
#: What `from_id` takes for a call id: what `flyjobs._calls.plan.new_call_id` makes, and nothing
#: that could name another object of the store ("../x").
_CALL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
#: The outcomes a read record keeps (``"read"``), and the status each gives.
_READ = {
    "succeeded": CallStatus.consumed,
    "failed": CallStatus.failed,
    "cancelled": CallStatus.cancelled,
}
_ENDED = frozenset({CallStatus.succeeded, CallStatus.failed, CallStatus.cancelled})


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
    if not runtime.channel.detachable:
        raise ConfigError(
            "a detached call's result must outlive this process, so it goes through the object"
            " store: set FLYJOBS_STORE=s3://bucket/prefix (or BUCKET_NAME, from `fly storage"
            " create`) and FLYJOBS_RESULTS=store"
        )


async def write_record(
    runtime: Runtime,
    plan: Plan,
    call_id: str,
    ticket: ResultTicket,
    machine_id: str,
    deadline: float,
) -> None:
    """Record where a detached call runs and where its result will be (one PUT, sealed).

    :param ticket: the ticket of this attempt (its call id is ``<call_id>-r<n>`` on a retry),
        whose key and seal the result has.
    :param deadline: unix time (s) by which the client gives up on the call.
    """
    record = {
        "flyjobs": _RECORD_VERSION,
        "call_id": call_id,
        "app": plan.app,
        "fn_ref": plan.fn_ref,
        "attempt_id": ticket.call_id,
        "ticket": ticket.ticket_id,
        "machine_id": machine_id,
        "deadline": deadline,
        "timeout_s": plan.options.effective_timeout_s,
        "pickle": plan.options.pickle,
    }
    await _put_record(runtime, record)


async def _put_record(runtime: Runtime, record: dict[str, Any]) -> None:
    assert runtime.store is not None and runtime.result_key is not None
    call_id = record["call_id"]
    sealed = seal_call_record(runtime.result_key, call_id, msgpack.packb(record))
    await runtime.store.put(record_key(call_id), sealed)


def from_id(call_id: str) -> DetachedCall:
    """A handle on the detached call `call_id`, made by this or another process.

    Reads the call's record at once; see `DetachedCall` for what the handle does.

    :raises UnknownCallError: `call_id` is not a call id, or the store has no record of it.
    :raises ConfigError: no object store or result key is configured, or the call runs in
        another app than this process's (nothing is touched).
    :raises SerializationError: the record is not sealed with this process's result key for
        this call (nothing is read, decoded, deleted or destroyed).
    """
    if not isinstance(call_id, str) or not _CALL_ID.fullmatch(call_id):
        raise UnknownCallError(
            f"{call_id!r} is not a call id: give the id of a detached call (call.id of"
            " fn.spawn_detached(...), like fj-0123456789abcdef)"
        )
    runtime = get_runtime()
    if runtime.store is None:
        raise ConfigError(
            "Call.from_id finds detached calls in the object store: set FLYJOBS_STORE (or"
            " BUCKET_NAME) as the process that made the call had it"
        )
    if runtime.result_key is None:
        raise ConfigError(
            f"Call.from_id checks a detached call's record with the result key: set"
            f" {RESULT_KEY_ENV} as the process that made the call had it"
        )
    store = runtime.store
    data = runtime.portal.call(store.get, record_key(call_id))
    if data is None:
        raise UnknownCallError(
            f"no detached call {call_id} in the store {store.config.url}: it was not made"
            " detached with this store, or its record was removed (`flyjobs gc`, or the"
            " bucket's lifecycle rule, after a week)"
        )
    record = _open_record(runtime.result_key, call_id, data)
    app = runtime.app or runtime.settings.require("app")
    if record["app"] != app:
        raise ConfigError(
            f"detached call {call_id} runs in the app {record['app']!r}, and this process"
            f" uses the app {app!r}: set FLY_APP={record['app']} to reach it (nothing was"
            " read or changed)"
        )
    return DetachedCall(_Attachment(runtime, store, record))


class _Attachment:
    """What a `DetachedCall` handle knows: its sealed record, and the ticket of its result."""

    def __init__(self, runtime: Runtime, store: Store, record: dict[str, Any]) -> None:
        self.runtime = runtime
        self.store = store
        self.record = record
        self.call_id: str = record["call_id"]
        self.state = CallState(self.call_id, status=CallStatus.running)
        self.machine_id: str = record.get("machine_id", "")
        read = record.get("read")
        if read is not None:
            self.state.status = _READ[read]
            return
        self.state.machine_id = self.machine_id
        self.ticket = StoreTicket(
            store,
            record["attempt_id"],
            expires_at=record["deadline"] + 60,
            seal_key=runtime.result_key,
            bound_to=record["ticket"],
        )
        self.ticket.keep()

    @property
    def read(self) -> str | None:
        """The outcome recorded when the result was read (or the call cancelled), if it was."""
        read: str | None = self.record.get("read")
        return read

    async def probe(self) -> CallStatus:
        """The call's status now, from its record, its result and its machine."""
        assert self.runtime.result_key is not None
        data = await self.store.get(record_key(self.call_id))
        if data is not None:
            record = _open_record(self.runtime.result_key, self.call_id, data)
            if record.get("read") is not None:
                self.record = record
                return _READ[record["read"]]
        if self.read is not None:
            return _READ[self.read]
        if await self.ticket.fetch():
            return await self._delivered()
        try:
            machine = await self.runtime.client.get_machine(self.record["app"], self.machine_id)
        except NotFoundError:
            return CallStatus.failed
        if machine.state in ("stopped", "destroyed", "failed"):
            # It may have delivered just before it stopped.
            return await self._delivered() if await self.ticket.fetch() else CallStatus.failed
        return CallStatus.running

    async def _delivered(self) -> CallStatus:
        ok = decode_result(await self.ticket.result()).ok
        return CallStatus.succeeded if ok else CallStatus.failed

    async def mark_read(self, outcome: str) -> None:
        """The outcome was read (or the call cancelled): delete the result, and mark the record
        so a later `from_id` says so."""
        self.record = {
            "flyjobs": _RECORD_VERSION,
            "call_id": self.call_id,
            "app": self.record["app"],
            "read": outcome,
        }
        await self.store.discard(result_key(self.ticket.call_id))
        try:
            await _put_record(self.runtime, self.record)
        except Exception:
            await self.store.discard(record_key(self.call_id))


class DetachedCall(Call[Any]):
    """The handle `Call.from_id` gives: a detached call, made by this or another process.

    ``status`` is read from the truth each time it is asked (the call's record, its result in
    the store, its machine) until ``result`` or ``cancel`` takes the call over:
    ``succeeded, result already read`` (`CallStatus.consumed`) once any handle has read its
    value. ``result(timeout_s)`` waits for the outcome (the machine's exit, then the result in
    the store); ``cancel()`` destroys the machine. Reading the outcome, or cancelling, deletes
    the result from the store; the call's record stays, marked, so the result is read once.
    """

    __slots__ = ("_attach", "_lock", "_started")

    def __init__(self, attach: _Attachment) -> None:
        future: Future[Any] = Future()
        done = threading.Event()
        if attach.read is not None:
            future.set_exception(_already_read(attach))
            done.set()
        super().__init__(attach.state, future, done)
        self._attach = attach
        self._lock = threading.Lock()
        self._started = attach.read is not None

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            attach, done = self._attach, self._done

            async def run() -> Any:
                try:
                    return await _reattach(attach)
                except anyio.get_cancelled_exc_class():
                    attach.state.status = CallStatus.cancelled
                    raise
                finally:
                    done.set()

            self._future = attach.runtime.submit(run)

    @property
    def status(self) -> CallStatus:
        """The call's status, read from its record, its result and its machine when asked."""
        if self._started:
            return self._state.status
        status = self._attach.runtime.portal.call(self._attach.probe)
        self._state.status = status
        return status

    def done(self) -> bool:
        """True once the call has an outcome (read from the truth, as `status`)."""
        return self._done.is_set() if self._started else self.status != CallStatus.running

    def result(self, timeout_s: float | None = None) -> Any:
        self._start()
        return super().result(timeout_s)

    async def result_async(self) -> Any:
        self._start()
        return await super().result_async()

    def cancel(self, timeout_s: float = 30.0) -> bool:
        if not self._started and self.status in (*_ENDED, CallStatus.consumed):
            return False
        self._start()
        return super().cancel(timeout_s)

    def add_done_callback(self, fn: Any) -> None:
        self._start()
        super().add_done_callback(fn)

    def __repr__(self) -> str:
        # The status last known: a repr reads nothing.
        return f"<DetachedCall {self.id} {self._state.status.value}>"


def _already_read(attach: _Attachment) -> BaseException:
    call_id, read = attach.call_id, attach.read
    if read == "cancelled":
        return CallCancelledError(f"detached call {call_id} was cancelled")
    what = "its result" if read == "succeeded" else "its error"
    return UnknownCallError(
        f"detached call {call_id} {read}, and {what} was already read (through"
        " Call.from_id(...).result() in this or another process): a detached call's outcome is"
        " read once"
    )


async def _reattach(attach: _Attachment) -> Any:
    runtime, record, state, ticket = attach.runtime, attach.record, attach.state, attach.ticket
    call_id, app, machine_id = attach.call_id, record["app"], attach.machine_id
    plan = from_record(record)
    try:
        if await ticket.look():
            value = await outcome(runtime, plan, await ticket.result(), call_id, machine_id)
        else:
            run = await MachineRun.adopt(runtime, plan, machine_id, call_id)
            value = await run.value(Attempt.resume(plan, ticket, record["deadline"]), state)
    except anyio.get_cancelled_exc_class():
        if not runtime.closing:  # cancelled by its handle: the call is over for everyone
            with anyio.CancelScope(shield=True):
                await destroy(runtime, app, machine_id)
                await attach.mark_read("cancelled")
        raise
    except BaseException:
        state.status = CallStatus.failed
        if not runtime.closing:  # its error was read
            with anyio.CancelScope(shield=True):
                await attach.mark_read("failed")
        raise
    state.status = CallStatus.succeeded
    await attach.mark_read("succeeded")
    return value


def _open_record(secret: str, call_id: str, data: bytes) -> dict[str, Any]:
    """The record of `call_id` in `data`, checked to be sealed for it with `secret`."""
    opened = open_call_record(secret, call_id, data)
    if opened is None:
        raise SerializationError(
            f"the store's record of detached call {call_id} is not sealed for it with this"
            f" process's result key ({RESULT_KEY_ENV}): it was changed by someone who can write"
            " the bucket, or made with another key (or by a flyjobs older than this one);"
            " nothing was read, decoded or destroyed"
        )
    try:
        record = msgpack.unpackb(opened, raw=False)
    except Exception as exc:
        raise SerializationError(f"not a flyjobs call record: {exc}") from exc
    if not isinstance(record, dict) or record.get("flyjobs") != _RECORD_VERSION:
        raise SerializationError("not a flyjobs call record of this version")
    if record.get("call_id") != call_id:
        raise SerializationError(f"the store's record of detached call {call_id} is another's")
    return record
