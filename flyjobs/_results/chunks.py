"""The chunk objects of a store-mode batch machine: where it reads its next inputs.

A batch machine whose results go through the object store cannot pull its next input from the
caller; it reads its next chunk of calls from the store instead (the protocol is in
`flyjobs._wire.chunk`). A `ChunkFeed` is the caller's side of one machine's chunks: it presigns
the GET of each next chunk's key ahead of time (the URL travels in the payload, then in each
chunk), writes each chunk sealed with the result key and bound to that URL, and deletes each
once the machine has read it (a result of one of its calls came in: `read`, then `delete`), or
at the machine's end.

Keys (under the store's prefix): ``chunks/<machine name>/<n>``, n from 1 (chunk 0 is the
machine's payload). ``flyjobs gc`` removes those a killed caller left (see
`flyjobs._results.store.CALL_PREFIXES`).
"""

from __future__ import annotations

import anyio

from .._wire.chunk import seal_chunk
from .store import Store

__all__ = ("CHUNK_PREFIX", "ChunkFeed")

#: The key prefix of chunk objects.
CHUNK_PREFIX = "chunks"


class ChunkFeed:
    """One machine's chunk objects (see the module docstring).

    :param name: the machine's name (unique in its batch and app).
    :param seal_key: the app's result key.
    """

    def __init__(self, store: Store, name: str, seal_key: str) -> None:
        self._store = store
        self._name = name
        self._seal_key = seal_key
        self._number = 0
        self._next: tuple[str, str] | None = None
        self._written: list[str] = []
        self._lock = anyio.Lock()

    def next_url(self, expires_at: float) -> str:
        """Presign the GET of the next chunk's key, valid until ``expires_at`` (unix s): the
        URL the chunk before it (or the payload) names."""
        self._number += 1
        key = f"{CHUNK_PREFIX}/{self._name}/{self._number}"
        url = self._store.presign("GET", key, expires_at=expires_at)
        self._next = (key, url)
        return url

    async def write(self, calls: list[bytes], next_expires_at: float | None) -> str:
        """Write the chunk the last `next_url` names: ``calls`` (encoded call envelopes; none
        means "no more work") and, with ``next_expires_at``, the URL of the chunk after it.
        Return its key.

        :raises TransportError: the store could not be written.
        """
        async with self._lock:
            assert self._next is not None, "next_url was not called"
            key, url = self._next
            next_url = None if next_expires_at is None else self.next_url(next_expires_at)
            self._written.append(key)
            # Shielded: a put cancelled here may still land in the bucket after `discard` has
            # deleted its key (the store's request runs on); finished, `discard` sees it.
            with anyio.CancelScope(shield=True):
                await self._store.put(key, seal_chunk(self._seal_key, url, calls, next_url))
            return key

    def read(self, key: str) -> bool:
        """The machine has read the chunk ``key`` (a result of one of its calls came in):
        True the first time, when it is to be deleted (`delete`); `discard` leaves it."""
        if key in self._written:
            self._written.remove(key)
            return True
        return False

    async def delete(self, key: str) -> None:
        """Delete the chunk ``key`` (errors are logged)."""
        await self._store.discard(key)

    async def discard(self) -> None:
        """Delete every chunk written (errors are logged; shielded, bounded in time), once a
        write under way has ended."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                written, self._written = self._written, []
        if written:
            await self._store.discard(written)
