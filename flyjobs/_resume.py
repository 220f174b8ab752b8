"""What a map does with its batch's journal (see `flyjobs._journal`): look each input up
before it runs, and record each value as soon as its input finishes.

Values are recorded when their input finishes, not when the caller reaches them, so a batch
killed while a slow early input holds the ordered output back loses only the inputs still
running. Recording happens on a thread of its own: never on the runtime's event loop (a store
journal blocks on the network), and in completion order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from ._call import Call, cancel_all
from ._call_envelope import encode_arguments
from ._codec import decode_value, encode_value
from ._journal import Journal, input_key, open_journal
from ._options import CallOptions
from ._reference import function_reference
from ._runtime import Runtime, get_runtime

__all__ = ("MISSING", "Resume", "resumable_map")

logger = logging.getLogger("flyjobs.journal")

#: What `Resume.recorded` returns for an input the journal does not have.
MISSING: Any = object()

_STOP = None


class Resume:
    """One map's use of its batch journal.

    :param name: the batch name (``batch=``).
    :param fn_ref: the function's ``module:qualname`` (part of every input's key).
    :param pickle: the map's ``pickle`` option: how values are encoded in the journal.
    """

    def __init__(self, runtime: Runtime, name: str, fn_ref: str, *, pickle: bool) -> None:
        self.journal: Journal = open_journal(name, runtime.settings, runtime.store)
        self._fn_ref = fn_ref
        self._pickle = pickle
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._writer = threading.Thread(
            target=self._write, name=f"flyjobs-journal-{name}", daemon=True
        )
        self._writer.start()

    def key(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The journal key of one input.

        :raises SerializationError: the input cannot be encoded.
        """
        return input_key(self._fn_ref, encode_arguments(args, kwargs, pickle=self._pickle))

    def recorded(self, key: str) -> Any:
        """The value recorded for `key`, or `MISSING`."""
        data = self.journal.lookup(key)
        if data is None:
            return MISSING
        if self._pickle:
            import pickle

            return pickle.loads(data)  # written by this client alone (see _journal)
        return decode_value(data, where="a journaled result")

    def finisher(self, key: str) -> Callable[[Any], None]:
        """A callback that records `key`'s value (call it once the input returned)."""

        def finished(value: Any) -> None:
            self._queue.put((key, self._encode(value)))

        return finished

    def _encode(self, value: Any) -> bytes:
        if self._pickle:
            import pickle

            return pickle.dumps(value, protocol=5)
        return encode_value(value, where="the result")

    def _write(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            key, data = item
            try:
                self.journal.record(key, data)
            except Exception as exc:  # a lost record only means the input runs again
                logger.warning("batch %s: could not record an input: %s", self.journal.name, exc)

    def close(self) -> None:
        """Write what is queued, then release the journal."""
        self._queue.put(_STOP)
        self._writer.join()
        self.journal.close()


def resumable_map(
    fn: Callable[..., Any],
    options: CallOptions,
    inputs: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]],
    name: str,
    *,
    order_outputs: bool,
    return_exceptions: bool,
) -> Iterator[Any]:
    """``fn.map(..., batch=name)``: run only the inputs the journal lacks, recording each as
    it finishes, and yield every input's value (recorded or fresh) in input order (or, with
    ``order_outputs=False``, the recorded ones first).

    Looks every input up before the first machine is created.
    """
    from ._map import map_calls, results

    runtime = get_runtime()
    resume = Resume(runtime, name, function_reference(fn)[0], pickle=options.pickle)
    try:
        items = list(inputs)
        keys = [resume.key(args, kwargs) for args, kwargs in items]
        recorded = [resume.recorded(key) for key in keys]
        missing = [i for i, value in enumerate(recorded) if value is MISSING]
        calls = map_calls(fn, options, [items[i] for i in missing]) if missing else []
    except BaseException:
        resume.close()
        raise
    for index, call in zip(missing, calls, strict=True):
        call.add_done_callback(_recorder(resume.finisher(keys[index])))
    return _yield(resume, recorded, dict(zip(missing, calls, strict=True)), calls, order_outputs,
                  return_exceptions, results)  # fmt: skip


def _recorder(finished: Callable[[Any], None]) -> Callable[[Future[Any]], None]:
    def done(future: Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            finished(future.result())

    return done


def _yield(
    resume: Resume,
    recorded: list[Any],
    running: dict[int, Call[Any]],
    calls: list[Call[Any]],
    order_outputs: bool,
    return_exceptions: bool,
    results: Callable[..., Iterator[Any]],
) -> Iterator[Any]:
    try:
        if not order_outputs:
            yield from (value for value in recorded if value is not MISSING)
            yield from results(calls, order_outputs=False, return_exceptions=return_exceptions)
            return
        for index, value in enumerate(recorded):
            call = running.get(index)
            if call is None:
                yield value
                continue
            try:
                fresh = call.result()
            except Exception as exc:
                if not return_exceptions:
                    raise
                yield exc
            else:
                yield fresh
    finally:
        cancel_all(calls)
        resume.close()
