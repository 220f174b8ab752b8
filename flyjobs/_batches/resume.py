"""What a map does with its batch's journal (see `flyjobs._batches.journal`): look each input up
as it is read, and record each value as soon as its input finishes.

Values are recorded when their input finishes, not when the caller reaches them, and before
the input's machine is handed its next input, so a batch killed at any moment loses only the
inputs its machines were running. Lookups and records run in worker threads, never on the
runtime's event loop (a store journal blocks on the network), one at a time.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Callable
from typing import Any

from .._calls.attempt import trusted_modules
from .._calls.runtime import Runtime, get_runtime
from .._declare.options import CallOptions
from .._exceptions import ConfigError
from .._wire.codec import decode_value, encode_value
from .._wire.reference import function_reference
from .._wire.seal import RESULT_KEY_ENV, open_record, seal_record
from .journal import SPENT_KEY, Journal, StoreJournal, input_key, open_journal
from .work import MISSING

__all__ = ("Resume", "open_resume")

logger = logging.getLogger("flyjobs.journal")


class Resume:
    """One map's use of its batch journal (the map's `flyjobs._batches.work.Recorder`).

    :param name: the batch name (``batch=``).
    :param fn_ref: the function's ``module:qualname`` (part of every input's key).
    :param pickle: the map's ``pickle`` option: how values are encoded in the journal.
    :param app: the app the batch runs in (bound into every sealed record with the name).
    """

    def __init__(
        self, runtime: Runtime, name: str, fn_ref: str, *, pickle: bool, app: str = ""
    ) -> None:
        self.journal: Journal = open_journal(name, runtime.settings, runtime.store)
        # A sealed record names its app, batch and input: copied to another batch (or
        # another app's journal in a shared bucket), it is not taken for that one's value.
        self._bound = f"{app}\0{name}\0"
        self._fn_ref = fn_ref
        self._pickle = pickle
        self._may_import = trusted_modules(fn_ref)
        # A journal in the object store is as writable as the bucket: its records are sealed
        # with the result key, so a record that was not written by a holder of the key is
        # never decoded (with pickle=True, decoding one would run its code here).
        self._key: str | None = None
        if isinstance(self.journal, StoreJournal):
            self._key = runtime.settings.result_key
            if not self._key:
                self.journal.close()
                raise ConfigError(
                    f"batch={name!r} keeps its journal in the object store, whose records are"
                    f" authenticated with the result key: set {RESULT_KEY_ENV} (the same value"
                    " as the app secret, see flyjobs doctor)"
                )
        # One journal connection, used from worker threads: one call at a time.
        self._lock = threading.Lock()

    def lookup(self, arguments: bytes) -> Any:
        """The value recorded for the input with these encoded arguments, or `MISSING`."""
        return self.recorded(input_key(self._fn_ref, arguments))

    def record(self, arguments: bytes, value: Any) -> None:
        """Record the value of the input with these encoded arguments (blocks until written;
        a record that fails is logged: it only means the input runs again)."""
        self._record(input_key(self._fn_ref, arguments), value)

    def _record(self, key: str, value: Any) -> None:
        try:
            data = self._encode(value)
            if self._key is not None:
                data = seal_record(self._key, self._bound + key, data)
            with self._lock:
                self.journal.record(key, data)
        except Exception as exc:
            logger.warning("batch %s: could not record an input: %s", self.journal.name, exc)

    def recorded(self, key: str) -> Any:
        """The value recorded for `key`, or `MISSING`."""
        with self._lock:
            data = self.journal.lookup(key)
        if data is None:
            return MISSING
        if self._key is not None:
            data = open_record(self._key, self._bound + key, data)
            if data is None:
                logger.warning(
                    "batch %s: a record is not sealed for this batch with this result key; its"
                    " input runs again",
                    self.journal.name,
                )
                return MISSING
        try:
            if self._pickle:
                return pickle.loads(data)  # sealed (store) or written by this user (SQLite)
            return decode_value(data, where="a journaled result", may_import=self._may_import)
        except Exception as exc:
            # The code changed since it was recorded (a class renamed), or the record is
            # damaged: running the input again gives its value as the code is now.
            logger.warning(
                "batch %s: a recorded value cannot be decoded (%s); its input runs again",
                self.journal.name,
                exc,
            )
            return MISSING

    def spent_usd(self) -> float:
        """USD the batch's earlier runs spent, as they recorded it (0.0 if none did)."""
        value = self.recorded(SPENT_KEY)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return 0.0
        return float(value)

    def add_spent(self, usd: float) -> None:
        """Add what this run spent to the batch's record of it."""
        if usd > 0:
            self._record(SPENT_KEY, self.spent_usd() + usd)

    def _encode(self, value: Any) -> bytes:
        if self._pickle:
            return pickle.dumps(value, protocol=5)
        return encode_value(value, where="the result")

    def close(self) -> None:
        """Release the journal."""
        with self._lock:
            self.journal.close()


def open_resume(fn: Callable[..., Any], options: CallOptions, name: str) -> Resume:
    """The recorder of ``fn.map(..., batch=name)`` over its batch's journal: the map looks
    each input up as it reads it, runs only those not recorded, and records each value as soon
    as its input returns.
    """
    runtime = get_runtime()
    app = options.app or runtime.app or ""
    return Resume(runtime, name, function_reference(fn)[0], pickle=options.pickle, app=app)
