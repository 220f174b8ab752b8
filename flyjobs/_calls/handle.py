"""The handle of one spawned remote call."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._aio.blocking import warn_if_in_event_loop
from .._aio.bridge import await_future
from .._exceptions import CallCancelledError, FlyjobsTimeoutError
from .._wire.remote_errors import is_remote

if TYPE_CHECKING:
    from .._trace.spans import CallTrace

__all__ = ("Call", "CallState", "CallStatus", "Timings", "cancel_all")

R = TypeVar("R")


class CallStatus(enum.StrEnum):
    """Where a call is in its life."""

    __module__ = "flyjobs"

    #: waiting for a place in the pool of machines in flight
    queued = "queued"
    #: its machine is being created
    creating = "creating"
    #: its machine exists and runs the function
    running = "running"
    #: the function returned; the value is ready
    succeeded = "succeeded"
    #: the call ended without a value (the function raised, the machine crashed, timed out)
    failed = "failed"
    #: the call was cancelled and its machine destroyed
    cancelled = "cancelled"
    #: a detached call (`Call.from_id`) succeeded, and its value was read already: it is read
    #: once, so ``result()`` raises `UnknownCallError`
    consumed = "succeeded, result already read"


@dataclass
class Timings:
    """Wall-clock marks of one call, in seconds since the epoch (None until reached).

    :ivar submitted_at: the call was made.
    :ivar create_started_at: the machine create request was sent (after the pool let it in).
    :ivar created_at: the API answered the create.
    :ivar result_at: the result arrived in the inbox.
    :ivar exited_at: the machine was seen stopped or destroyed.
    :ivar finished_at: the call's outcome was settled.
    """

    __module__ = "flyjobs"

    submitted_at: float = field(default_factory=time.time)
    create_started_at: float | None = None
    created_at: float | None = None
    result_at: float | None = None
    exited_at: float | None = None
    finished_at: float | None = None

    @property
    def total_s(self) -> float | None:
        """Seconds from submission to outcome, once finished."""
        return None if self.finished_at is None else self.finished_at - self.submitted_at


@dataclass
class CallState:
    """What the dispatcher knows of a call, shared with its handle (written on the runtime's
    event loop thread, read from any thread; each field is replaced whole, never mutated)."""

    call_id: str
    status: CallStatus = CallStatus.queued
    machine_id: str | None = None
    timings: Timings = field(default_factory=Timings)
    #: the call's span, when the caller traces (`flyjobs._trace`)
    trace: CallTrace | None = field(default=None, repr=False)


class Call(Generic[R]):
    """A remote call running in the background, returned by ``fn.spawn(...)``.

    ``result()`` blocks until the value is ready (``await call.result_async()`` from async
    code); ``cancel()`` stops the call and destroys its machine.
    """

    __module__ = "flyjobs"

    __slots__ = ("_done", "_future", "_state")

    def __init__(self, state: CallState, future: Future[R], done: threading.Event) -> None:
        self._state = state
        self._future = future
        self._done = done

    @classmethod
    def from_id(cls, call_id: str) -> Call[Any]:
        """A handle on the detached call `call_id` (``fn.spawn_detached``), made by this or
        another process, now or earlier: ``status``, ``result(timeout_s)`` and ``cancel()``.

        It is found through the object store (``FLYJOBS_STORE``) and the machine's state; its
        ``status`` is read from them when asked. The result is deleted from the store once read
        (or the call cancelled); the call's record then says so (``status`` is
        `CallStatus.consumed`).

        :raises UnknownCallError: ``call_id`` is not a call id, or the store has no such call.
        :raises ConfigError: no object store or result key is configured, or the call runs in
            another app than this process's (nothing is touched).
        :raises SerializationError: the call's record in the store is not sealed with this
            process's result key (changed by someone who can write the bucket): nothing is
            read, decoded or destroyed.
        """
        from .detach import from_id  # breaks a cycle: a detached call is a `Call`

        return from_id(call_id)

    @property
    def id(self) -> str:
        """The call's id: its machine's name, in its metadata and in ``flyjobs logs``; what
        `from_id` takes for a detached call."""
        return self._state.call_id

    @property
    def status(self) -> CallStatus:
        """The call's current status."""
        return self._state.status

    @property
    def machine_id(self) -> str | None:
        """The id of the machine running the call, once created."""
        return self._state.machine_id

    @property
    def timings(self) -> Timings:
        """Timestamps of the call's steps."""
        return self._state.timings

    def _wait_created(self) -> None:
        """Block until the call's machine exists (or the call ended)."""
        while self._state.machine_id is None and not self._done.wait(0.01):
            pass

    def done(self) -> bool:
        """True once the call has an outcome. Its machine is then destroyed, or (after it
        delivered its result) exiting by itself and watched until it has."""
        return self._done.is_set()

    def result(self, timeout_s: float | None = None) -> R:
        """Block until the call's value is ready and return it, or raise its error.

        :param timeout_s: seconds to wait; None waits as long as the call's own ``timeout_s``.
        :raises FlyjobsTimeoutError: when ``timeout_s`` passes first (the call goes on).
        """
        warn_if_in_event_loop("call.result()", "`await call.result_async()`")
        try:
            try:
                return self._future.result(timeout_s)
            except Exception as exc:
                if is_remote(exc):  # see is_remote: the caller's frames only
                    raise exc.with_traceback(None)  # noqa: B904 - itself, re-raised
                raise
        except CancelledError:
            raise CallCancelledError(f"call {self.id} was cancelled") from None
        except TimeoutError as exc:
            if self._future.done():
                raise
            raise FlyjobsTimeoutError(
                f"call {self.id} has no result after {timeout_s} s; it is still running"
            ) from exc

    async def result_async(self) -> R:
        """Await the call's value (from any async code), or raise its error."""
        try:
            return await await_future(self._future)
        except CancelledError:
            raise CallCancelledError(f"call {self.id} was cancelled") from None
        except Exception as exc:
            if is_remote(exc):  # see is_remote: the caller's frames only
                raise exc.with_traceback(None)  # noqa: B904 - itself, re-raised
            raise

    def cancel(self, timeout_s: float = 30.0) -> bool:
        """Cancel the call and wait (up to ``timeout_s`` seconds) until its machine is destroyed.

        :return: True if the call was cancelled, False if it had already finished.
        """
        cancelled = self._future.cancel()
        self._done.wait(timeout_s)
        return cancelled

    def add_done_callback(self, fn: Callable[[Future[R]], Any]) -> None:
        """Call ``fn(future)`` once the call has an outcome (in the runtime's thread)."""
        self._future.add_done_callback(fn)

    def __repr__(self) -> str:
        machine = f" machine={self.machine_id}" if self.machine_id else ""
        return f"<Call {self.id} {self.status.value}{machine}>"


def cancel_all(calls: Iterable[Call[Any]], timeout_s: float = 30.0) -> None:
    """Cancel every unfinished call at once, then wait (up to ``timeout_s`` seconds in all)
    until their machines are destroyed. ``timeout_s=0`` does not wait."""
    pending = [call for call in calls if not call._future.done()]
    for call in pending:
        call._future.cancel()
    deadline = time.monotonic() + timeout_s
    for call in pending:
        call._done.wait(max(0.0, deadline - time.monotonic()))
