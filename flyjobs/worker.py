"""The worker runtime: ``python -m flyjobs.worker`` runs a machine's calls.

It reads the call payload at the fixed guest path (under ``$FLYJOBS_MACHINE_ROOT`` in the local
emulator), imports the function, runs it under the call's deadline, delivers the result envelope
with one HTTP PUT to the URL the payload names, and exits with a code from `flyjobs._wire.machine`.
A call with ``pulls`` belongs to a batch or pool machine: the answer to its delivery may carry
the next call envelope, which the worker runs in the same process (the function stays
imported), until the answer is "no more work" (see `flyjobs._wire.machine.NEXT_INPUT_WAIT_S`).
The answer may be a chunk of calls, run in order with their results delivered in one bulk; a
thread gives back the calls of a chunk waiting behind one that runs long (`flyjobs._wire.bulk`).
While it waits for that answer (up to the call's ``idle_s``) its deadline is the end of the wait
plus `_PUT_TIMEOUT_S`, so a machine whose caller has vanished ends itself by then
(`flyjobs._wire.machine.IDLE_EXIT_GRACE_S`) even if no answer, and no error, ever comes. A call
with ``concurrent`` calls (a warm pool's ``max_concurrency``) runs them at the same time, each
in a slot (a pull loop) of its own with its own deadline and output tail (see `_Worker`).
A call with ``chunk_url`` belongs to a store-mode batch machine: once it and the calls in
``then`` have run, the worker reads its next chunk of calls from that presigned URL, checking
its seal first (`flyjobs._wire.chunk`), under a deadline of the wait as above.
A machine that may run more than one call (``pulls``, a fixed slice in ``then``, any batch's)
writes a line before and after each call's output (`flyjobs._wire.log_lines.call_mark`), and one
that runs calls at the same time writes each line of a call as
`flyjobs._wire.log_lines.call_line`, so that a call's lines can be told apart in the machine's
logs. The exit code is the last call's:

- ``EXIT_OK``: a result was delivered (the function's own exception is a delivered result);
- ``EXIT_BAD_PAYLOAD``: the payload is missing, unreadable, or not a flyjobs call;
- ``EXIT_IMPORT_FAILED``: the function (or a class its arguments name) could not be imported;
  an error result describing it is delivered first when possible;
- ``EXIT_DEADLINE``: the deadline passed before the result was delivered (code stuck in C
  that holds the GIL is ended by faulthandler a few seconds later, with exit code 1 and the
  stacks of its threads on stderr);
- ``EXIT_DELIVERY_FAILED``: the result could not be delivered (after two quick retries);
- ``EXIT_RESULT_TOO_LARGE``: the result inbox refused the result as too large (HTTP 413);
- ``EXIT_RESULT_REFUSED``: the result inbox refused the result as not sealed with the
  caller's result key (HTTP 403, `RESULT_NOT_SEALED`: this machine's key is not the caller's).

Arguments too large for the payload come from the object store: the payload then names a
presigned URL to GET them from, and their digest. Bytes of another digest (the object was
replaced) are refused unread: an error result of stage ``payload`` is delivered, and the worker
exits ``EXIT_BAD_PAYLOAD``.

A payload with a ``schedule`` (a scheduled function's machine, made by ``flyjobs schedule
deploy``) has no caller: `flyjobs._machine_side.scheduled_run` runs it and writes each outcome to
the log.

Every call pays this module's start-up, so it imports only the standard library's cheapest
modules and msgpack; anything else is imported on the path that needs it. Usage::

    python -m flyjobs.worker [--payload PATH]
"""

from __future__ import annotations

import _socket
import _thread
import os
import sys
import time

from flyjobs._exceptions import SerializationError
from flyjobs._machine_side.bundles import ResultBundler
from flyjobs._machine_side.code import Bundles, CodeRefused
from flyjobs._machine_side.drift import explain_missing
from flyjobs._machine_side.run import TAIL_CHARS, from_user_code, import_function
from flyjobs._machine_side.run import call as call_function
from flyjobs._machine_side.shared import (
    SLOT,
    Deadlines,
    EventLoop,
    Tail,
    capture_output,
    log,
)
from flyjobs._wire.bulk import (
    BULK_HEADER,
    MAX_BULK_BYTES,
    chunk_hold_s,
    encode_bulk,
    split_answer,
)
from flyjobs._wire.call_envelope import CallEnvelope, decode_call
from flyjobs._wire.chunk import POLL_FIRST_S, POLL_MAX_S, Chunk, open_chunk
from flyjobs._wire.log_lines import call_error, call_mark
from flyjobs._wire.machine import (
    EXIT_BAD_PAYLOAD,
    EXIT_DEADLINE,
    EXIT_DELIVERY_FAILED,
    EXIT_IMPORT_FAILED,
    EXIT_OK,
    EXIT_RESULT_REFUSED,
    EXIT_RESULT_TOO_LARGE,
    MACHINE_ROOT_ENV,
    PAYLOAD_GUEST_PATH,
)
from flyjobs._wire.remote_errors import ErrorInfo, describe_exception
from flyjobs._wire.result_envelope import encode_result
from flyjobs._wire.seal import (
    DELIVERY_PROOF_HEADER,
    RESULT_KEY_ENV,
    RESULT_NOT_SEALED,
    delivery_proof,
    seal_result,
    ticket_id,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("main", "payload_path")

#: Seconds to wait before each retry of a failed delivery.
_RETRY_DELAYS_S = (0.2, 1.0)
#: Socket timeout (s) of one delivery attempt, plus a second per MiB of body (a large result
#: to the object store must not need more than 1 MiB/s to get through).
_PUT_TIMEOUT_S = 10.0
#: Socket timeout (s) of fetching spilled arguments.
_GET_TIMEOUT_S = 60.0
#: Seconds between looks at the wall clock while a delivery's answer is held (a pool or batch
#: machine waiting for its next call): a clock that moved well past that in one look means the
#: machine was suspended meanwhile, and its connection may be gone without a word (the caller
#: may have dropped it while the machine was frozen), so the worker delivers again at once and
#: rejoins the held answer (`flyjobs._results.inbox`).
_HELD_LOOK_S = 5.0
#: The wall clock of those looks (tests replace it).
_clock = time.time


class _Resumed(OSError):
    """The machine was suspended, and resumed, while its delivery's answer was held."""


class _Unsized(OSError):
    """A successful answer whose body's end its Content-Length does not tell (see
    `_read_response`)."""


def payload_path() -> str:
    """Where the payload file is: the fixed guest path, under ``$FLYJOBS_MACHINE_ROOT`` if set."""
    root = os.environ.get(MACHINE_ROOT_ENV, "")
    if not root:
        return PAYLOAD_GUEST_PATH
    return os.path.join(root, PAYLOAD_GUEST_PATH.lstrip("/"))


def _exit_now(code: int) -> None:
    """End the process at once, whatever its other threads are running."""
    # No flush, as in Deadlines: the streams are line buffered, and another thread may hold
    # their lock.
    log(f"exiting {code}")
    os._exit(code)


class _Slot:
    """One of the machine's pull loops: the index its output is kept under, and its current
    call's timings."""

    __slots__ = ("chunk", "index", "refused", "timings", "too_large", "unwanted", "watched")

    def __init__(self, index: int, started: float) -> None:
        self.index = index
        #: the chunk of calls it is running (`flyjobs._wire.bulk`), if any
        self.chunk: _Chunk | None = None
        #: its chunk watchdog thread runs (see `_Worker._watch_chunks`)
        self.watched = False
        self.timings: dict[str, float] = {"worker_start": started}
        self.too_large = False
        #: the inbox refused the result as not sealed with the caller's result key (403)
        self.refused = False
        #: the inbox has no ticket for the result any more (404, 410): the caller gave up on it
        self.unwanted = False


class _Chunk:
    """A chunk of calls a slot runs in order, their results delivered together (a bulk; see
    `flyjobs._wire.bulk`). Shared with the slot's watchdog thread, under ``lock``."""

    __slots__ = ("done", "lock", "pending", "results", "returned", "since")

    def __init__(self, pending: list[CallEnvelope]) -> None:
        self.lock = _thread.allocate_lock()
        #: the calls not started yet
        self.pending = pending
        #: (result URL, result envelope) of the calls run and not delivered yet
        self.results: list[tuple[str, bytes]] = []
        #: result URLs of calls given back unrun whose notice was not delivered yet
        self.returned: list[str] = []
        #: unix time (s) the running call started
        self.since = time.time()
        self.done = False


class _Worker:
    """A machine's run: one call, or (for a call with ``pulls``) each next call the inbox
    answers a delivery with, in the same process, until there is no more work for it.

    A call with ``concurrent`` calls gives the machine one slot per call, each such a loop: the
    first in the main thread, the others in threads of their own (`flyjobs._wire.machine` says how
    slots end). Sync functions run in their slot's thread, async ones on `EventLoop`.
    """

    def __init__(self, started: float, result_key: str | None) -> None:
        self.started = started
        self.result_key = result_key
        self.stdout: Tail | None = None
        self.stderr: Tail | None = None
        self.deadlines = Deadlines()
        self.loop = EventLoop()
        self.marks = False
        self._functions: dict[str, Callable[..., Any]] = {}
        #: the callers' code bundles this machine's calls import from
        self.bundles = Bundles(result_key, _get)
        #: held while a slot imports its function or decodes its arguments: a module another
        #: slot is importing is in sys.modules before it is complete
        self._imports = _thread.allocate_lock()
        #: exit codes of the slots (other than the first) that have ended
        self._ended: list[int] = []
        #: a store-mode batch machine's results, delivered a few at a time
        self.bundler: ResultBundler | None = None

    def run(self, call: CallEnvelope) -> int:
        """Run the slots of `call` and its ``concurrent`` calls; return the exit code: the first
        slot's, else the first other slot's that is not EXIT_OK."""
        self.stdout, self.stderr = capture_output(TAIL_CHARS)
        # A machine that may run more than one call marks each call's output
        # (`flyjobs._wire.log_lines`): a batch's (whose machine may be named for the batch even
        # with one input) or a pool's.
        self.marks = call.pulls or bool(call.then) or bool(call.batch_id)
        try:
            others = [decode_call(data) for data in call.concurrent]
        except SerializationError as exc:
            log(f"bad concurrent call in the payload: {exc}")
            return EXIT_BAD_PAYLOAD
        self.stdout.prefixed = self.stderr.prefixed = self.marks and bool(others)
        joins = [self._start_slot(index, other) for index, other in enumerate(others, 1)]
        code, alone = self._loop(0, call)
        if not alone:
            return code  # the other slots' calls end with the process; the caller retries them
        for ended in joins:
            # Each other slot ends by itself, or `Deadlines` ends the process.
            ended.acquire()
        return next((each for each in (code, *self._ended) if each != EXIT_OK), EXIT_OK)

    def _start_slot(self, index: int, call: CallEnvelope) -> Any:
        """Run slot `index` in a thread; return a lock that is released when it ends."""
        ended = _thread.allocate_lock()
        ended.acquire()
        _thread.start_new_thread(self._slot_thread, (index, call, ended))
        return ended

    def _slot_thread(self, index: int, call: CallEnvelope, ended: Any) -> None:
        code, alone = EXIT_DELIVERY_FAILED, False
        try:
            code, alone = self._loop(index, call)
        except BaseException as exc:
            log(f"slot {index} failed: {type(exc).__name__}: {exc}")
        if not alone:
            # A failure of the machine's (payload, import, delivery): it ends, and the caller
            # retries the calls its other slots hold, as for any machine that dies.
            _exit_now(code)
        self._ended.append(code)
        ended.release()

    def _loop(self, index: int, call: CallEnvelope) -> tuple[int, bool]:
        """Run `call` and every call that follows it in slot `index`; return the exit code of
        the last, and whether the slot ends alone (the others go on): when it has no more work,
        or its call ran past its deadline, or its caller no longer wanted the result."""
        SLOT.set(index)
        slot = _Slot(index, self.started)
        code = EXIT_OK
        following = list(call.then)  # a fixed slice: the calls after this one
        chunk_url = call.chunk_url  # a store-mode batch machine: where its next chunk will be
        if chunk_url and self.result_key:
            self.bundler = ResultBundler(_put_with_retries, lambda: _exit_now(EXIT_DELIVERY_FAILED))
        next_call: CallEnvelope | None = call
        while next_call is not None:
            code, next_call = self._run_one(slot, next_call)
            if self.bundler is not None and not self.bundler.flush_if(not following):
                return EXIT_DELIVERY_FAILED, False
            while next_call is None and code == EXIT_OK and not following and chunk_url:
                # A chunk with no calls and a next URL: nothing yet, wait again.
                try:
                    chunk = self._next_chunk(slot, chunk_url, call)
                except SerializationError as exc:
                    log(f"refusing the next chunk: {exc}")
                    return EXIT_BAD_PAYLOAD, False
                following = list(chunk.calls) if chunk is not None else []
                chunk_url = chunk.next_url if chunk is not None else None
            if next_call is None and code == EXIT_OK and following:
                try:
                    next_call = decode_call(following.pop(0))
                except SerializationError as exc:
                    log(f"bad call in the machine's slice: {exc}")
                    return EXIT_BAD_PAYLOAD, False
        if self.bundler is not None and not self.bundler.flush():
            return EXIT_DELIVERY_FAILED, False
        self.deadlines.clear(index)
        return code, code in (EXIT_OK, EXIT_DEADLINE) or slot.unwanted

    def _run_one(self, slot: _Slot, call: CallEnvelope) -> tuple[int, CallEnvelope | None]:
        if call.deadline - time.time() <= 0:
            log(f"deadline passed before {call.call_id} started; exiting {EXIT_DEADLINE}")
            return EXIT_DEADLINE, None
        for tail in (self.stdout, self.stderr):
            if tail is not None:
                tail.start(slot.index, call.call_id)
        self._mark(slot, "start", call.call_id)
        self.deadlines.set(slot.index, call.deadline, call.fn)
        # Each call reports its own marks: none of the slot's previous call's.
        slot.timings = {"worker_start": self.started}
        fn, failed = self._import(slot, call)
        if fn is None:
            return failed, None
        if call.arguments_url:
            try:
                fetched = _get(call.arguments_url)
            except OSError as exc:
                log(f"cannot fetch the arguments of {call.call_id}: {exc}")
                return EXIT_BAD_PAYLOAD, None
            try:
                call.take_arguments(fetched)
            except SerializationError as exc:
                log(f"refusing the arguments of {call.call_id}: {exc}")
                # Delivered (sealed like any result), so the caller says why, naming the call.
                self._deliver(
                    slot, call, self._encode_error(slot, call, "payload", exc), final=True
                )
                return EXIT_BAD_PAYLOAD, None
        try:
            with self._imports:
                args, kwargs = call.arguments()
        except SerializationError as exc:
            log(f"cannot decode the arguments of {call.call_id}: {exc}")
            missing_class = isinstance(exc.__cause__, (ImportError, AttributeError))
            body = self._encode_error(slot, call, "arguments", exc)
            delivered, next_call = self._deliver(slot, call, body)
            if delivered and next_call is not None:
                return EXIT_OK, next_call
            return (EXIT_IMPORT_FAILED if missing_class else EXIT_BAD_PAYLOAD), None
        body = self._run_function(slot, call, fn, args, kwargs)
        if time.time() >= call.deadline:
            # It ran past its deadline while other slots kept the process up: the caller has
            # given up on it.
            log(f"{call.call_id} ended past its deadline; its result is not delivered")
            return EXIT_DEADLINE, None
        delivered, next_call = self._deliver(slot, call, body)
        if delivered:
            return EXIT_OK, next_call
        if slot.refused:
            return EXIT_RESULT_REFUSED, None
        return (EXIT_RESULT_TOO_LARGE if slot.too_large else EXIT_DELIVERY_FAILED), None

    def _import(self, slot: _Slot, call: CallEnvelope) -> tuple[Callable[..., Any] | None, int]:
        """`call`'s function, from the code bundle it names if any; else None and the exit
        code, its error delivered."""
        sys.path[:0] = [entry for entry in call.sys_path if entry not in sys.path]
        if call.code is not None and not self._take_code(slot, call):
            # A bundle refused because this machine's key is not the caller's (its result,
            # sealed with it, was refused too) is a key to fix, not code to distrust.
            return None, EXIT_RESULT_REFUSED if slot.refused else EXIT_BAD_PAYLOAD
        try:
            return self._function(call.fn, slot.timings), EXIT_OK
        except (Exception, SystemExit) as failure:
            # Shipped code that imports what the image lacks: named, with the image.
            exc = explain_missing(failure, call.code.get("requires", [])) if call.code else failure
            log(f"cannot import {call.fn}: {type(exc).__name__}: {exc}")
            self._deliver(slot, call, self._encode_error(slot, call, "import", exc), final=True)
            return None, EXIT_IMPORT_FAILED

    def _take_code(self, slot: _Slot, call: CallEnvelope) -> bool:
        """Import from the code bundle `call` names; False when it is refused (its error
        delivered)."""
        try:
            with self._imports:
                if self.bundles.use(call.call_id, call.code or {}):
                    self._functions.clear()  # another bundle: its own version of each
        except CodeRefused as exc:
            log(f"refusing the code of {call.call_id}: {exc}")
            # Delivered (sealed like any result), so the caller says why, naming the call.
            self._deliver(slot, call, self._encode_error(slot, call, "code", exc), final=True)
            return False
        return True

    def _next_chunk(self, slot: _Slot, url: str, call: CallEnvelope) -> Chunk | None:
        """The machine's next chunk of calls (see `flyjobs._wire.chunk`), read from ``url``
        within the call's ``idle_s``; None when none came (the machine has no more work).

        :raises SerializationError: the object there is not a chunk sealed for this machine.
        """
        if not self.result_key:
            raise SerializationError(f"no {RESULT_KEY_ENV} to check a chunk's seal with")
        until = time.time() + call.idle_s
        # A caller that vanished leaves no chunk: the machine ends by the end of this wait.
        self.deadlines.set(slot.index, until + _PUT_TIMEOUT_S, call.fn)
        interval = POLL_FIRST_S
        while True:
            try:
                sealed = _get_object(url, _PUT_TIMEOUT_S)
            except OSError as exc:
                log(f"cannot read the next chunk yet: {exc}")
                sealed = None
            if sealed is not None:
                return open_chunk(self.result_key, url, sealed)
            if time.time() + interval > until:
                return None
            time.sleep(interval)
            interval = min(1.5 * interval, POLL_MAX_S)

    def _mark(self, slot: _Slot, kind: str, call_id: str) -> None:
        """Mark the ``kind`` ("start" or "end") of a call's output, on a machine that marks."""
        if not self.marks or self.stdout is None or self.stderr is None:
            return
        if kind == "end":
            self.stdout.finish(slot.index)
            self.stderr.finish(slot.index)
        # Both streams may share the machine's output: neither may leave a line unfinished.
        self.stderr.end_line()
        self.stdout.write_line(call_mark(kind, call_id))

    def _function(self, ref: str, timings: dict[str, float]) -> Callable[..., Any]:
        """The function ``ref`` names, imported by the first call that needs it: that call's
        ``timings`` mark the import."""
        with self._imports:
            fn = self._functions.get(ref)
            if fn is None:
                timings["import_start"] = time.time()
                fn = self._functions[ref] = import_function(ref)
                timings["import_end"] = time.time()
            return fn

    def _run_function(
        self,
        slot: _Slot,
        call: CallEnvelope,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> bytes:
        """Run the function; return the encoded result (its value or its exception)."""
        slot.timings["function_start"] = time.time()
        try:
            value = call_function(fn, args, kwargs, self.loop, call.traceparent)
        except BaseException as exc:
            # KeyboardInterrupt and the user's own BaseException subclasses too: they are the
            # function's outcome, delivered like any exception.
            slot.timings["function_end"] = time.time()
            return self._encode_error(slot, call, "call", from_user_code(exc))
        slot.timings["function_end"] = time.time()
        try:
            return self._encode(slot, call, value=value)
        except SerializationError as exc:
            return self._encode_error(slot, call, "result", exc)

    def _encode(
        self, slot: _Slot, call: CallEnvelope, value: object = None, error: ErrorInfo | None = None
    ) -> bytes:
        slot.timings["deliver_start"] = time.time()
        return encode_result(
            call.call_id,
            value=value,
            error=error,
            stdout_tail=self.stdout.text(slot.index) if self.stdout else "",
            stderr_tail=self.stderr.text(slot.index) if self.stderr else "",
            timings=slot.timings,
            pickle=call.pickle,
        )

    def _encode_error(
        self, slot: _Slot, call: CallEnvelope, stage: str, exc: BaseException
    ) -> bytes:
        error = describe_exception(exc, stage=stage, pickle=call.pickle)
        if self.stdout is not None:
            # In the logs too (the result goes to the caller alone): `flyjobs logs` shows it.
            line = call_error(call.call_id, error.type, error.message, error.traceback)
            self.stdout.write_line(line)
        return self._encode(slot, call, error=error)

    def _deliver(
        self, slot: _Slot, call: CallEnvelope, body: bytes, *, final: bool = False
    ) -> tuple[bool, CallEnvelope | None]:
        """PUT `body` to the result URL; return (accepted, the next call if the inbox gave one).

        A ``final`` delivery takes no next call (the worker exits after it).
        """
        # The call's output ends before its result leaves: whoever has the result finds the end
        # mark in the logs, even if the machine is destroyed right after the delivery.
        self._mark(slot, "end", call.call_id)
        if self.bundler is not None and self.result_key:
            # A store-mode batch machine's results travel a few at a time, each sealed for
            # its own URL (`flyjobs._machine_side.bundles`).
            if not final:
                sealed = seal_result(self.result_key, body, ticket=ticket_id(call.result_url))
                self.bundler.add(call.call_id, call.result_url, sealed)
                return True, None
            if not self.bundler.flush():  # the results before it go first
                return False, None
        if slot.chunk is not None:
            return self._deliver_in_chunk(slot, slot.chunk, call, body, final=final)
        return self._put_result(slot, call, call.result_url, body, pulls=call.pulls and not final)

    def _deliver_in_chunk(
        self, slot: _Slot, chunk: _Chunk, call: CallEnvelope, body: bytes, *, final: bool
    ) -> tuple[bool, CallEnvelope | None]:
        """Keep a chunk's result; hand back the chunk's next call, or (the chunk is done, or
        ``final``: the machine stops, and the calls not started go back) deliver the bulk."""
        kept: list[tuple[str, bytes]] = []
        with chunk.lock:
            chunk.results.append((call.result_url, body))
            next_call = chunk.pending.pop(0) if chunk.pending and not final else None
            if next_call is None:
                results, chunk.results = chunk.results, []
                returned = chunk.returned + [each.result_url for each in chunk.pending]
                chunk.pending, chunk.returned, chunk.done = [], [], True
            elif sum(len(result) for _, result in chunk.results) >= MAX_BULK_BYTES:
                kept, chunk.results = chunk.results, []
            chunk.since = time.time()
        if next_call is not None:
            if kept:
                self._give_back(chunk, kept, [])  # large results go before the next call
                chunk.since = time.time()
            return True, next_call
        slot.chunk = None
        url = results[0][0]
        bulk = encode_bulk(results, returned, answer=call.pulls and not final)
        return self._put_result(slot, call, url, bulk, pulls=call.pulls and not final, bulk=True)

    def _put_result(
        self,
        slot: _Slot,
        call: CallEnvelope,
        url: str,
        body: bytes,
        *,
        pulls: bool,
        bulk: bool = False,
    ) -> tuple[bool, CallEnvelope | None]:
        """PUT a result (or a bulk) to ``url``; return (accepted, the next call if any)."""
        if self.result_key:
            # Bound to the URL it goes to: a captured delivery fits no other ticket.
            body = seal_result(self.result_key, body, ticket=ticket_id(url))
        if pulls:
            # The call is done; the inbox may hold the answer for the idle period. The deadline
            # is the end of that wait, and no later, so a vanished caller cannot keep the
            # machine up whatever the call's own deadline was.
            wait_until = time.time() + call.idle_s + _PUT_TIMEOUT_S + len(body) / 1048576
            self.deadlines.set(slot.index, wait_until, call.fn)
        attempt = 0
        while attempt <= len(_RETRY_DELAYS_S):
            if attempt:
                time.sleep(_RETRY_DELAYS_S[attempt - 1])
            try:
                status, answer = _put(
                    url,
                    body,
                    hold_s=call.idle_s if pulls else 0.0,
                    result_key=self.result_key,
                    bulk=bulk,
                )
            except _Resumed as exc:
                # Not a failed attempt: the same delivery again, at once. The deadline thread
                # has looked at the clock too, and ended the process if the wait is over.
                log(f"{exc}; delivering again to rejoin the held answer")
                continue
            except OSError as exc:
                log(f"result delivery attempt {attempt + 1} failed: {exc}")
                attempt += 1
                continue
            attempt += 1
            if 200 <= status < 300:
                return True, self._next_call(slot, answer) if pulls else None
            if status == 409 and attempt > 1:
                # A retry refused as a second delivery: the attempt before it reached the inbox
                # and only its answer was lost (with it, any next call: the client retries that
                # input elsewhere when this machine exits).
                return True, None
            if status < 500:
                log(f"result delivery refused: HTTP {status} ({len(body)} bytes)")
                slot.too_large = status == 413
                slot.refused = status == 403 and answer == RESULT_NOT_SEALED.encode()
                slot.unwanted = status in (404, 410)
                return False, None
            log(f"result delivery attempt {attempt} failed: HTTP {status}")
        return False, None

    def _next_call(self, slot: _Slot, answer: bytes) -> CallEnvelope | None:
        """The call (or the first of the chunk of calls) the answer to a delivery carries."""
        try:
            calls = [decode_call(each) for each in split_answer(answer)]
        except SerializationError as exc:
            log(f"bad next call from the inbox: {exc}")
            return None
        if len(calls) > 1:
            slot.chunk = _Chunk(calls[1:])
            if not slot.watched:
                slot.watched = True
                _thread.start_new_thread(self._watch_chunks, (slot,))
        return calls[0] if calls else None

    def _watch_chunks(self, slot: _Slot) -> None:
        """(A thread per slot that runs chunks.) When a call of a chunk has run `CHUNK_HOLD_S`
        (or `CHUNK_HOLD_ENV`'s seconds)
        while calls after it wait, deliver the results the chunk has so far and give back the
        calls not started, so that other machines run them (see `flyjobs._wire.bulk`)."""
        hold_s = chunk_hold_s(os.environ)
        while True:
            chunk = slot.chunk
            wait_s = hold_s
            if chunk is not None:
                with chunk.lock:
                    if chunk.pending and not chunk.done:
                        wait_s = chunk.since + hold_s - time.time()
                        if wait_s <= 0:
                            results, chunk.results = chunk.results, []
                            returned = chunk.returned + [each.result_url for each in chunk.pending]
                            chunk.pending, chunk.returned = [], []
                if wait_s <= 0:
                    self._give_back(chunk, results, returned)
                    continue
            time.sleep(wait_s)

    def _give_back(
        self, chunk: _Chunk, results: list[tuple[str, bytes]], returned: list[str]
    ) -> None:
        """Deliver ``results`` and give back ``returned`` (a bulk that wants no answer); what
        does not get through goes with the chunk's last bulk instead."""
        url = results[0][0] if results else returned[0]
        body = encode_bulk(results, returned, answer=False)
        if self.result_key:
            body = seal_result(self.result_key, body, ticket=ticket_id(url))
        try:
            status, _ = _put(url, body, result_key=self.result_key, bulk=True)
        except OSError as exc:
            status = 0
            log(f"giving back the rest of a chunk failed: {exc}")
        if not 200 <= status < 300:
            with chunk.lock:
                chunk.results[:0] = results
                chunk.returned += returned


def _put(
    url: str,
    body: bytes,
    *,
    hold_s: float = 0.0,
    result_key: str | None = None,
    bulk: bool = False,
) -> tuple[int, bytes]:
    """PUT `body` to `url`; return the HTTP status and the answer's body.

    :param hold_s: seconds the answer may be held (the machine's idle period, when the answer
        carries the next call): wait for it that much longer.
    :param result_key: the app's result key: an ``http://`` (inbox) request carries its
        delivery proof, which the inbox checks before it reads the body.
    :param bulk: the body is a bulk of results (`flyjobs._wire.bulk`; inbox only).
    """
    timeout_s = _PUT_TIMEOUT_S + len(body) / 1048576 + hold_s
    if url.startswith("http://"):
        return _put_http(url, body, timeout_s, result_key, held=hold_s > 0, bulk=bulk)
    return _put_urllib(url, body, timeout_s)


def _split_http_url(url: str) -> tuple[str, str, int, str]:
    """(host header, host, port, request target) of an ``http://`` URL."""
    authority, _, path = url[len("http://") :].partition("/")
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = authority.partition(":")
    return authority, host, int(port_text or 80), "/" + path.partition("#")[0]


def _put_http(
    url: str,
    body: bytes,
    timeout_s: float,
    result_key: str | None = None,
    *,
    held: bool = False,
    bulk: bool = False,
) -> tuple[int, bytes]:
    # HTTP/1.1 by hand over _socket (socket's C core), because every call pays the worker's
    # imports: http.client pulls in the email package (about 18 ms measured here, more than the
    # ~13 ms an interpreter that imports msgpack needs in all), urllib.request adds ssl on top
    # (about 23 ms), and even the socket module adds enum and selectors (about 3 ms); all this
    # for one request, one status line and a body of known length.
    authority, host, port, target = _split_http_url(url)
    proof = ""
    if result_key:
        path = target.partition("?")[0]
        proof = f"{DELIVERY_PROOF_HEADER}: {delivery_proof(result_key, path)}\r\n"
    if bulk:
        proof += f"{BULK_HEADER}: 1\r\n"
    request = (
        f"PUT {target} HTTP/1.1\r\nHost: {authority}\r\n"
        f"Content-Type: application/msgpack\r\nContent-Length: {len(body)}\r\n{proof}"
        "Connection: close\r\n\r\n"
    ).encode("latin-1") + body
    return _over_http(host, port, request, timeout_s, held=held)


def _over_http(
    host: str,
    port: int,
    request: bytes,
    timeout_s: float,
    *,
    held: bool = False,
    sized: bool = False,
) -> tuple[int, bytes]:
    """Send ``request`` (HTTP/1.1, ``Connection: close``) to ``host``:``port`` on a new
    connection; (status, body) of the answer (``held``, ``sized``: see `_exchange`)."""
    error: OSError = OSError(f"cannot resolve {host}")
    # An ASCII host given as bytes: as str, getaddrinfo imports the idna codec (a few ms).
    name = host.encode("ascii") if host.isascii() else host
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout_s)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        try:
            return _exchange(sock, request, timeout_s if held else None, sized=sized)
        finally:
            sock.close()
    raise error


def _exchange(
    sock: _socket.socket, request: bytes, held_s: float | None = None, *, sized: bool = False
) -> tuple[int, bytes]:
    """Send ``request``, read the answer; ``held_s``: seconds the answer may be held, waited
    for while looking at the clock (`_HELD_LOOK_S`); ``sized``: a successful answer must
    give its Content-Length (else `_Unsized`)."""
    try:
        sock.sendall(request)
    except OSError:
        # The server may answer (413, 403) and close before reading the whole body; its answer
        # is then still readable and says more than the broken pipe does.
        answer = _read_response(sock)
        if answer is None:
            raise
        return answer
    first = b"" if held_s is None else _await_answer(sock, held_s)
    answer = _read_response(sock, first, sized=sized)
    if answer is None:
        raise OSError("the result inbox closed the connection without an HTTP status")
    return answer


def _await_answer(sock: _socket.socket, timeout_s: float) -> bytes:
    """The first bytes of a held answer, waited for up to ``timeout_s`` seconds.

    :raises _Resumed: the wall clock jumped while waiting (see `_HELD_LOOK_S`).
    :raises TimeoutError: no answer in time.
    """
    sock.settimeout(_HELD_LOOK_S)
    waited_s = 0.0
    while True:
        looked = _clock()
        try:
            first = sock.recv(65536)
        except TimeoutError:
            slept_s = _clock() - looked
            if slept_s > 2 * _HELD_LOOK_S:
                raise _Resumed(
                    f"the machine was suspended for about {slept_s:.0f} s while its delivery"
                    " waited for an answer"
                ) from None
            waited_s += slept_s
            if waited_s >= timeout_s:
                raise
            continue
        sock.settimeout(_PUT_TIMEOUT_S)
        return first


def _read_response(
    sock: _socket.socket, first: bytes = b"", *, sized: bool = False
) -> tuple[int, bytes] | None:
    """(status, body) of the answer (``first``: its bytes read already); the body is read to
    its Content-Length (empty without; with ``sized``, a 2xx answer without raises
    `_Unsized`)."""
    response = first
    try:
        while b"\r\n\r\n" not in response and len(response) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    except OSError:
        pass
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    length = -1
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length < 0 and sized and parts[1].startswith(b"2"):
        raise _Unsized("the answer's body has no Content-Length")
    length = max(length, 0)
    while len(body) < length:
        chunk = sock.recv(min(length - len(body), 1 << 20))
        if not chunk:
            raise OSError("the result inbox closed the connection in the middle of its answer")
        body += chunk
    return int(parts[1]), body[:length]


def _get(url: str) -> bytes:
    """GET `url` (a presigned object-store URL); its body, or OSError."""
    # Only calls whose arguments spilled to the store pay for urllib (and ssl for https).
    import urllib.request

    with urllib.request.urlopen(url, timeout=_GET_TIMEOUT_S) as response:
        data: bytes = response.read()
        return data


def _put_with_retries(url: str, body: bytes) -> bool:
    """PUT ``body`` to ``url`` (a presigned object-store URL), retried as a delivery is; True
    if the store took it."""
    for attempt in range(len(_RETRY_DELAYS_S) + 1):
        if attempt:
            time.sleep(_RETRY_DELAYS_S[attempt - 1])
        try:
            status, _ = _put(url, body)
        except OSError as exc:
            log(f"result delivery attempt {attempt + 1} failed: {exc}")
            continue
        if 200 <= status < 300:
            return True
        log(f"result delivery attempt {attempt + 1} failed: HTTP {status}")
    return False


def _get_object(url: str, timeout_s: float) -> bytes | None:
    """GET `url` (a presigned object-store URL); its body, None when there is no object yet
    (404), or OSError (any other failure, an expired URL's 403 among them)."""
    if url.startswith("http://"):
        # By hand, as `_put_http` and for its reasons: a store on plain HTTP (one on this
        # host or network) would otherwise cost each machine urllib's imports before its
        # second chunk. An answer whose body is not framed by its Content-Length (none that S3
        # gives to a GET of an object) is read again through urllib.
        authority, host, port, target = _split_http_url(url)
        request = f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        try:
            status, body = _over_http(host, port, request.encode("latin-1"), timeout_s, sized=True)
        except _Unsized:
            pass
        else:
            if status == 404:
                return None
            if status != 200:
                raise OSError(f"HTTP Error {status} from the object store")
            return body
    # lazy: only store-mode batch machines read chunks
    import urllib.error
    import urllib.request  # lazy: as above

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _put_urllib(url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
    # https (presigned object-storage URLs): TLS is worth its import cost there.
    import urllib.error
    import urllib.request  # lazy: keeps machines light

    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "application/msgpack"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def main(argv: list[str] | None = None) -> int:
    """Run the call in the payload file; return the exit code (see the module docstring).

    :param argv: command-line arguments (default ``sys.argv[1:]``): none, or
        ``--payload PATH`` to read another payload file (for debugging).
    """
    started = time.time()
    # An app secret like any other: the function may see it (its own remote calls need it).
    result_key = os.environ.get(RESULT_KEY_ENV)
    args = sys.argv[1:] if argv is None else argv
    if args and (len(args) != 2 or args[0] != "--payload"):
        log("usage: python -m flyjobs.worker [--payload PATH]")
        return EXIT_BAD_PAYLOAD
    path = args[1] if args else payload_path()
    try:
        with open(path, "rb") as file:
            call = decode_call(file.read())
    except OSError as exc:
        log(f"cannot read the payload {path}: {exc.strerror or exc}")
        return EXIT_BAD_PAYLOAD
    except SerializationError as exc:
        log(f"bad payload {path}: {exc}")
        return EXIT_BAD_PAYLOAD
    if call.schedule is not None:
        # A scheduled function's machine: no caller, each run's outcome goes to the log.
        from flyjobs._machine_side.scheduled_run import run_scheduled

        return run_scheduled(call, path)
    return _Worker(started, result_key).run(call)


if __name__ == "__main__":
    sys.exit(main())
