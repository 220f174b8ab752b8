"""How a call's result comes back: the caller's inbox, or the object store.

``FLYJOBS_RESULTS`` (or ``[tool.flyjobs] results``) picks the channel:

- ``inbox``: machines PUT results to an HTTP inbox this process serves, so they must reach it:
  the local emulator, a caller on a Fly machine (``FLY_PRIVATE_IP``), or one whose address in
  the app's private network is ``FLYJOBS_INBOX_HOST`` (WireGuard, for example).
- ``store``: machines PUT results to presigned URLs in the object store (``FLYJOBS_STORE``); the
  caller learns a machine is done from ``/wait`` and its exit event, then reads the object.
  The caller can be anywhere.
- ``auto`` (default): the inbox where machines can reach it, else the store.

Either way the result envelope is the same bytes, checked by the same code, and callers see one
interface: the runtime's `Channel` opens a `ResultTicket` per attempt (an inbox `Ticket` or a
`StoreTicket`), puts and presigns spilled arguments, and explains an undelivered result. What
differs between the two (answering a delivery with the next input, polling the store, keeping
a detached result) is decided here; nothing outside `flyjobs._results` checks which it is.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal, Protocol

import anyio

from .._exceptions import ConfigError, SerializationError, TransportError
from .._wire.chunk import open_bundle
from .._wire.machine import NEXT_INPUT_WAIT_S
from .._wire.result_envelope import decode_result
from .._wire.seal import open_result, ticket_id

if TYPE_CHECKING:
    from .._settings import Settings
    from .chunks import ChunkFeed
    from .inbox import ResultInbox
    from .store import Store

__all__ = (
    "RESULTS_MODES",
    "Channel",
    "ResultTicket",
    "StoreTicket",
    "choose_channel",
    "code_key",
    "result_key",
    "undelivered_reason",
)

logger = logging.getLogger("flyjobs.channel")

RESULTS_MODES = ("auto", "inbox", "store")
#: Seconds before a polling `StoreTicket` first looks for its object, and most seconds between
#: two looks.
POLL_FIRST_S = 1.0
POLL_MAX_S = 8.0


class ResultTicket(Protocol):
    """Where one attempt's result is delivered, and how the caller gets it: an inbox `Ticket`
    or a `StoreTicket`. Callers use only this; what differs between the two stays here.

    :ivar call_id: the attempt the result is for.
    :ivar url: where the worker delivers the result.
    :ivar expires_at: unix time (s) after which `url` no longer works.
    :ivar replies: the delivery can be answered with the machine's next input (inbox only).
    :ivar polls: look for the result while the machine runs, not only after its exit (the
        store's tickets of a fixed slice; the inbox is told of each delivery and ignores it).
    """

    call_id: str
    url: str
    polls: bool

    @property
    def expires_at(self) -> float: ...

    @property
    def ticket_id(self) -> str:
        """The id the result's seal is bound to (see `flyjobs._wire.seal.ticket_id`)."""

    @property
    def replies(self) -> bool: ...

    @property
    def delivered(self) -> bool:
        """True once the result is in."""

    @property
    def spoiled(self) -> str | None:
        """Why an object found for this result was ignored (store only; see `StoreTicket`)."""

    async def result(self) -> bytes:
        """Wait (without a limit) for the result; the envelope, checked to be this call's."""

    async def look(self) -> bool:
        """Look for the result once now (the store is read); True if it is in."""

    async def after_exit(self) -> None:
        """The machine exited: give its result the time (inbox) or the look (store) it needs
        to be found."""

    async def watch(self) -> None:
        """While the machine runs: look for the result at intervals when `polls` is set
        (store), else return at once."""

    def reply(self, payload: bytes | None) -> None:
        """Answer the held delivery with the machine's next input, or None for "no more work"
        (a no-op where deliveries are not answered)."""

    def keep(self) -> None:
        """Leave the result where it is when the ticket is closed (a detached call's)."""

    async def aclose(self) -> None:
        """Forget the ticket (idempotent; cleans up what the channel holds for it)."""


@dataclasses.dataclass(frozen=True)
class Channel:
    """The result channel of this process.

    :ivar mode: ``inbox`` or ``store``.
    :ivar bind: address the inbox listens on.
    :ivar advertise: address machines use to reach the inbox.
    :ivar inbox: the inbox tickets are opened on (set by `bound`).
    :ivar store: the object store, if one is configured (set by `bound`); spilled arguments go
        there whatever the mode.
    """

    mode: Literal["inbox", "store"]
    bind: str = "127.0.0.1"
    advertise: str = "127.0.0.1"
    inbox: ResultInbox | None = dataclasses.field(default=None, repr=False, compare=False)
    store: Store | None = dataclasses.field(default=None, repr=False, compare=False)
    result_key: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def bound(self, inbox: ResultInbox, store: Store | None, result_key: str | None) -> Channel:
        """This channel, opening tickets on ``inbox`` or ``store`` (sealed with ``result_key``)."""
        return dataclasses.replace(self, inbox=inbox, store=store, result_key=result_key)

    @property
    def uses_store(self) -> bool:
        """Results go through the object store."""
        return self.mode == "store"

    @property
    def pulls(self) -> bool:
        """Machines can pull their next input with a delivery (the inbox answers it)."""
        return self.mode == "inbox"

    @property
    def feeds(self) -> bool:
        """Machines that cannot pull read their next inputs from the store instead, in chunks
        sealed with the result key (see `chunk_feed`)."""
        return self.mode == "store" and self.store is not None and bool(self.result_key)

    def chunk_feed(self, name: str) -> ChunkFeed:
        """The chunk objects of the machine ``name`` (only where `feeds`)."""
        from .chunks import ChunkFeed  # lazy: it loads the store's module, a store's only

        assert self.store is not None and self.result_key  # callers check `feeds`
        return ChunkFeed(self.store, name, self.result_key)

    async def delivered(self, call_id_prefix: str) -> set[str]:
        """The ids of the calls starting with ``call_id_prefix`` whose result objects are in
        the store now: one listing, for looking at many results at once (only where `feeds`).

        :raises TransportError: the store could not be listed.
        """
        assert self.store is not None  # callers check `feeds`
        # Listed by folder: S3 clients match a prefix segment by segment.
        found = await self.store.list(result_key(""))
        ids = (info.key.removeprefix(result_key("")) for info in found)
        return {call_id for call_id in ids if call_id.startswith(call_id_prefix)}

    def bundled(self, call_id: str) -> bool:
        """The result of ``call_id`` came in another's bundle and waits for its ticket (see
        `flyjobs._wire.chunk`): looking for it reads no object."""
        return self.store is not None and call_id in self.store.bundled

    async def discard_results(self, call_ids: list[str]) -> None:
        """Delete the result objects of ``call_ids`` in one request (errors are logged by the
        store; shielded, bounded in time; only where `feeds`)."""
        if call_ids and self.store is not None:
            await self.store.discard([result_key(call_id) for call_id in call_ids])

    @property
    def spills(self) -> bool:
        """Arguments too large to travel inline can go through the object store."""
        return self.store is not None

    @property
    def detachable(self) -> bool:
        """A result can outlive this process (it goes to the object store)."""
        return self.mode == "store" and self.store is not None

    def ticket(
        self,
        call_id: str,
        expires_at: float,
        *,
        replies: bool = False,
        hold_s: float = NEXT_INPUT_WAIT_S,
        on_late: Callable[[], None] | None = None,
        on_returned: Callable[[str], None] | None = None,
    ) -> ResultTicket:
        """Open the ticket of ``call_id``'s result, its URL valid until ``expires_at`` (unix s).
        ``replies``: an inbox delivery is answered with the machine's next input, held up to
        ``hold_s`` seconds. ``on_late``: called for each delivery to the inbox after the
        ticket was closed without a result. ``on_returned``: called with the call id when a
        bulk delivery to the inbox gives the call back unrun (`flyjobs._wire.bulk`)."""
        if self.mode == "store":
            assert self.store is not None  # choose_channel picks the store only with one
            return StoreTicket(self.store, call_id, expires_at=expires_at, seal_key=self.result_key)
        assert self.inbox is not None  # bound by the runtime
        ttl_s = expires_at - time.time()
        return self.inbox.expect(
            call_id,
            ttl_s=ttl_s,
            replies=replies,
            hold_s=hold_s,
            on_late=on_late,
            on_returned=on_returned,
        )

    async def put_arguments(self, key: str, data: bytes) -> None:
        """Put arguments too large to travel inline in the store under ``key``."""
        assert self.store is not None  # encoding refuses to spill without one
        await self.store.put(key, data)

    def arguments_url(self, key: str, expires_at: float) -> str:
        """A presigned GET of the arguments put under ``key``, valid until ``expires_at``."""
        assert self.store is not None  # encoding refuses to spill without one
        return self.store.presign("GET", key, expires_at=expires_at)

    async def discard_arguments(self, key: str) -> None:
        """Delete the arguments put under ``key`` (errors are logged by the store)."""
        if self.store is not None:
            await self.store.discard(key)

    def code_url(self, sha256: str, data: bytes, expires_at: float) -> str:
        """A URL machines GET the code bundle ``data`` (its sha256 in hex) from until
        ``expires_at`` (unix s): the inbox's where machines reach it, else a presigned GET of
        the store's ``code/<sha256>.zip``, uploaded once (HEAD first, create-only). Blocking:
        call it outside the runtime's event loop.

        :raises ConfigError: results go through the store and no store is configured.
        """
        if self.mode == "inbox":
            assert self.inbox is not None  # bound by the runtime
            return self.inbox.serve_code(sha256, data, expires_at)
        assert self.store is not None  # choose_channel picks the store only with one
        key = code_key(sha256)
        self.store.put_once_sync(key, data)
        return self.store.presign("GET", key, expires_at=expires_at)

    def undelivered_reason(self, tail: str) -> str:
        """Why a worker exited ``EXIT_DELIVERY_FAILED`` (see `undelivered_reason`)."""
        return undelivered_reason(tail, self.mode)


def code_key(sha256: str) -> str:
    """The store key of the code bundle whose sha256 (hex) is ``sha256``."""
    return f"code/{sha256}.zip"


def choose_channel(
    settings: Settings, has_store: bool, environ: Mapping[str, str] | None = None
) -> Channel:
    """The channel `settings` ask for (see the module docstring).

    :raises ConfigError: an unknown mode, or the chosen channel (or, for ``auto``, both) cannot
        work here; the message names both ways to make one work.
    """
    env = os.environ if environ is None else environ
    mode = settings.results
    if mode not in RESULTS_MODES:
        raise ConfigError(
            f"FLYJOBS_RESULTS (or [tool.flyjobs] results) must be one of"
            f" {', '.join(RESULTS_MODES)}, not {mode!r}"
        )
    inbox = _reachable_inbox(settings, env)
    if mode == "inbox" or (mode == "auto" and inbox is not None):
        if inbox is None:
            raise ConfigError(_NEITHER if not has_store else _NO_INBOX)
        return Channel("inbox", *inbox)
    if not has_store:
        raise ConfigError(_NEITHER if mode == "auto" else _NO_STORE)
    return Channel("store")


_INBOX_WAY = (
    "run the client on a Fly machine (FLY_PRIVATE_IP is then set), or set FLYJOBS_INBOX_HOST to"
    " this host's address in your app's private network (for example its WireGuard address)"
)
_STORE_WAY = (
    "create a bucket with `fly storage create` and export what it prints (BUCKET_NAME,"
    " AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3), or set"
    " FLYJOBS_STORE=s3://bucket/prefix with those credentials"
)
_NEITHER = (
    "results of calls on Fly need a way back to this process. Either machines reach an inbox"
    f" it serves: {_INBOX_WAY}; or they go through an object store: {_STORE_WAY}"
)
_NO_INBOX = f"FLYJOBS_RESULTS=inbox needs machines to reach this process: {_INBOX_WAY}"
_NO_STORE = f"FLYJOBS_RESULTS=store needs an object store: {_STORE_WAY}"


def _reachable_inbox(settings: Settings, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(bind host, host machines use) of an inbox machines can reach, or None."""
    if settings.embedded:
        return "127.0.0.1", "127.0.0.1"
    # Bound to the advertised address only: the inbox has no business on other interfaces.
    advertise = env.get("FLYJOBS_INBOX_HOST") or env.get("FLY_PRIVATE_IP")
    if advertise:
        return env.get("FLYJOBS_INBOX_BIND") or advertise, advertise
    if settings.local_api:
        # The API is on this host (`flyjobs dev`): its machines are local processes.
        return env.get("FLYJOBS_INBOX_BIND") or "127.0.0.1", "127.0.0.1"
    return None


def result_key(call_id: str) -> str:
    """The store key of a call's result (relative to the store's prefix)."""
    return f"results/{call_id}"


class StoreTicket:
    """The store's counterpart of an inbox `Ticket`: one presigned PUT URL for one call's result.

    The store tells nobody when an object arrives, so the call looks (`fetch`) once its machine
    has exited (or its deadline passed). The object is deleted when the ticket is closed
    (`aclose`), unless `keep` was called (a detached call's result stays).

    :ivar call_id: the call the result is for.
    :ivar key: the object's key.
    :ivar url: the presigned URL the worker PUTs the result to.
    :ivar expires_at: unix time (s) after which the URL no longer works.

    Anyone who reads the machine's config can PUT to its URL: an object not sealed with
    `seal_key` for this ticket (see `flyjobs._wire.seal.seal_result`) is ignored, so a forger
    can spoil a result but never supply one.

    :param bound_to: the `flyjobs._wire.seal.ticket_id` the result is sealed for (default: this
        ticket's own URL's); a detached call read again later has a new URL but the old id.
    """

    def __init__(
        self,
        store: Store,
        call_id: str,
        *,
        expires_at: float,
        key: str | None = None,
        seal_key: str | None = None,
        bound_to: str | None = None,
    ) -> None:
        self.call_id = call_id
        self.key = key or result_key(call_id)
        self.expires_at = expires_at
        self.url = store.presign("PUT", self.key, expires_at=expires_at)
        #: the id the result's seal is bound to
        self.ticket_id = bound_to or ticket_id(self.url)
        self._keep = False
        #: look for the object while the machine runs (`poll`), not only after its exit: for
        #: an input of a fixed slice, whose machine exits only after the whole slice
        self.polls = False
        #: why the last object found at `key` was ignored (its seal failed, or it is not a
        #: result for this call), or None: a machine that exits "delivered" and leaves only
        #: such an object had its result overwritten
        self.spoiled: str | None = None
        self._store = store
        self._seal_key = seal_key
        self._body: bytes | None = None
        self._event = anyio.Event()

    #: a store's deliveries are never answered
    replies = False

    @property
    def delivered(self) -> bool:
        """True once a result for this call has been read from the store."""
        return self._body is not None

    async def result(self) -> bytes:
        """Wait until `fetch` found the result; return the envelope (checked to be one for this
        call). Waits without a limit."""
        await self._event.wait()
        assert self._body is not None
        return self._body

    async def fetch(self) -> bool:
        """Read the result object if it is there; True if it was (and is a result for this call).

        :raises TransportError: the store could not be read.
        """
        if self._body is not None:
            return True
        bundled = self._store.bundled.pop(self.call_id, None)
        if bundled is not None and self._accept(bundled):
            return True
        body = await self._store.get(self.key)
        if body is None:
            return False
        bundle = open_bundle(body)
        if bundle is not None:
            # A batch machine's results of quick calls, delivered together at the last one's
            # key: each other result waits here for its own ticket (and its checks).
            mine = bundle.pop(self.call_id, None)
            self._store.bundled.update(bundle)
            if mine is None:
                self.spoiled = "it is a bundle of results without this call's"
                logger.warning("ignored the object %s: %s", self.key, self.spoiled)
                return False
            body = mine
        return self._accept(body)

    def _accept(self, sealed: bytes) -> bool:
        """Take ``sealed`` as the result if it is sealed for this ticket and for this call."""
        body = sealed
        if self._seal_key is not None:
            opened = open_result(self._seal_key, sealed, ticket=self.ticket_id)
            if opened is None:
                self.spoiled = "it is not sealed with the result key for this call"
                logger.warning("ignored the object %s: %s", self.key, self.spoiled)
                return False
            body = opened
        try:
            envelope = decode_result(body)
        except SerializationError as exc:
            self.spoiled = str(exc)
            logger.warning("ignored the object %s: %s", self.key, exc)
            return False
        if envelope.call_id != self.call_id:
            self.spoiled = f"it is a result for call {envelope.call_id!r}"
            logger.warning("ignored the object %s: %s", self.key, self.spoiled)
            return False
        self._body = body
        self._event.set()
        return True

    async def poll(self) -> None:
        """`fetch` until the result is found, first after `POLL_FIRST_S`, then at intervals
        doubling up to `POLL_MAX_S` (each look is one GET of the store)."""
        interval = POLL_FIRST_S
        while True:
            await anyio.sleep(interval)
            try:
                if await self.fetch():
                    return
            except TransportError as exc:
                logger.info("could not look for %s yet: %s", self.key, exc)
            interval = min(2 * interval, POLL_MAX_S)

    async def look(self) -> bool:
        """`fetch` once (see `ResultTicket.look`)."""
        return await self.fetch()

    async def after_exit(self) -> None:
        """The machine exited: read the result object, if it is there."""
        await self.fetch()

    async def watch(self) -> None:
        """`poll` when `polls` is set; else return at once."""
        if self.polls:
            await self.poll()

    def reply(self, payload: bytes | None) -> None:
        """Nothing: a store's deliveries are not answered."""

    def keep(self) -> None:
        """Leave the object in the store when the ticket is closed."""
        self._keep = True

    async def aclose(self) -> None:
        """Forget the ticket: delete its object unless `keep` was called (errors are logged: a
        lifecycle rule or ``flyjobs gc`` removes what is left)."""
        self._store.bundled.pop(self.call_id, None)
        if not self._keep:
            await self._store.discard(self.key)

    def __repr__(self) -> str:
        return f"<StoreTicket {self.call_id} {'delivered' if self.delivered else 'waiting'}>"


#: What the worker logs for a delivery attempt that failed (see `flyjobs.worker`).
_ATTEMPT_FAILED = re.compile(r"result delivery attempt \d+ failed: (.*)")
#: How a failed attempt reads when the inbox took the connection and then turned it away (it
#: closes a connection beyond its slots, or answers 5xx), as opposed to never reaching it.
_TURNED_AWAY = re.compile(r"closed the connection|reset by peer|broken pipe|HTTP 5\d\d", re.I)


def undelivered_reason(tail: str, mode: str) -> str:
    """Why a worker exited ``EXIT_DELIVERY_FAILED``, from the delivery attempts its last lines
    (`tail`) show, for the result channel ``mode`` (``inbox`` or ``store``)."""
    if mode == "store":
        return (
            "the worker could not PUT its result to the object store (can machines reach"
            " AWS_ENDPOINT_URL_S3?)"
        )
    attempts = [m.group(1) for m in map(_ATTEMPT_FAILED.search, tail.splitlines()) if m]
    if attempts and all(_TURNED_AWAY.search(reason) for reason in attempts):
        return (
            "the worker reached this process's result inbox, which turned every delivery"
            " away: the inbox was full or busy (its connection slots held, for example by"
            " uploads that never finish; this process's log says so)"
        )
    if attempts:
        return (
            "the worker could not reach this process's result inbox (can machines reach"
            " this host? see FLYJOBS_INBOX_HOST)"
        )
    return (
        "the worker could not deliver its result: machines could not reach this process's"
        " result inbox (see FLYJOBS_INBOX_HOST), or it was full (this process's log says so)"
    )
