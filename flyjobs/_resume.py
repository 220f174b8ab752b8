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
from collections.abc import Callable
from typing import Any

from ._codec import decode_value, encode_value
from ._journal import Journal, input_key, open_journal
from ._options import CallOptions
from ._reference import function_reference
from ._runtime import Runtime, get_runtime
from ._work import MISSING

__all__ = ("Resume", "open_resume")

logger = logging.getLogger("flyjobs.journal")


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

    def lookup(self, arguments: bytes) -> Any:
        """The value recorded for the input with these encoded arguments, or `MISSING`."""
        return self.recorded(input_key(self._fn_ref, arguments))

    def record(self, arguments: bytes, value: Any) -> None:
        """Record the value of the input with these encoded arguments (written on the
        journal's own thread)."""
        self._queue.put((input_key(self._fn_ref, arguments), self._encode(value)))

    def recorded(self, key: str) -> Any:
        """The value recorded for `key`, or `MISSING`."""
        data = self.journal.lookup(key)
        if data is None:
            return MISSING
        if self._pickle:
            import pickle

            return pickle.loads(data)  # written by this client alone (see _journal)
        return decode_value(data, where="a journaled result")

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


def open_resume(fn: Callable[..., Any], options: CallOptions, name: str) -> Resume:
    """The journal of ``fn.map(..., batch=name)`` (a `flyjobs._work.Journal`): the map looks
    each input up as it reads it, runs only those not recorded, and records each value as soon
    as its input returns.
    """
    runtime = get_runtime()
    return Resume(runtime, name, function_reference(fn)[0], pickle=options.pickle)
