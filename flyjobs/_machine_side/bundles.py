"""How a store-mode batch machine delivers its results: several quick ones in one object.

Every result delivered through the object store costs a PUT here and a GET in the caller; a
machine running many quick calls would spend its time (and the store's) on them. The results of
calls that end within `flyjobs._wire.chunk.BUNDLE_S` of each other therefore travel together
(`flyjobs._wire.chunk.pack_bundle`), PUT to the result URL of the last: a thread delivers what is
held every `BUNDLE_S`, so no result waits longer than that (plus its PUT), and the worker
delivers what is held before it waits for its next chunk and before it exits.
"""

from __future__ import annotations

import _thread
import time

from flyjobs._wire.chunk import BUNDLE_S, pack_bundle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("ResultBundler",)


class ResultBundler:
    """Holds sealed results and delivers them (see the module docstring).

    :param put: PUTs a body to a URL; False when it could not (after its retries).
    :param failed: called (from the delivering thread) when a delivery failed: it ends the
        machine, as a result that cannot be delivered does.
    """

    def __init__(self, put: Callable[[str, bytes], bool], failed: Callable[[], None]) -> None:
        self._put = put
        self._failed = failed
        self._held: dict[str, bytes] = {}
        self._url = ""
        self._lock = _thread.allocate_lock()
        #: held by a delivery in progress: deliveries leave in the order they were held
        self._sending = _thread.allocate_lock()
        self._thread = False

    def add(self, call_id: str, url: str, sealed: bytes) -> None:
        """Hold the result of ``call_id`` (whose result URL is ``url``) for delivery."""
        with self._lock:
            self._held[call_id] = sealed
            self._url = url
            if not self._thread:
                self._thread = True
                _thread.start_new_thread(self._deliver_every, ())

    def flush(self) -> bool:
        """Deliver what is held now; False if that failed."""
        with self._sending:
            with self._lock:
                held, url, self._held = self._held, self._url, {}
            if not held:
                return True
            body = next(iter(held.values())) if len(held) == 1 else pack_bundle(held)
            return self._put(url, body)

    def flush_if(self, condition: bool) -> bool:
        """`flush` when ``condition`` holds (else True)."""
        return self.flush() if condition else True

    def _deliver_every(self) -> None:
        while True:
            time.sleep(BUNDLE_S)
            if not self.flush():
                self._failed()
