"""The result inbox: an HTTP endpoint this process serves, where workers PUT their results.

Each expected call gets a `Ticket` whose URL is the only way to deliver that call's result::

    http://{advertise_host}:{port}/results/{call_id}/{token}?expires={unix s}&sig={hex}

``token`` is fresh for every ticket, so a late delivery for an earlier attempt of the same call
id finds no ticket. ``sig`` is an HMAC-SHA256, under a key made for this inbox and never shown,
of the method, the path and the expiry. A delivery is refused with 403 (signature does not
match, the request head lacks the proof that its sender holds the app's result key, or the
body is not sealed with that key), 410 (expired), 404 (no open ticket),
409 (the ticket already has its result), 413 (body over ``max_body_bytes``) or 400 (not a flyjobs
result envelope for this call); it is answered 204 only after the result is stored, so a
result the worker saw accepted is never lost.

A signed delivery that finds its ticket closed without a result is late, not hostile: the caller
stopped waiting for it (its call was cancelled, timed out, or its batch stopped at Ctrl-C or
``max_failures``). It is refused with 404 like any other, logged at debug level only, and
counted through the ticket's ``on_late`` (a batch counts them in its summary).

A ticket opened with ``replies=True`` belongs to a machine that takes more than one input: once
its result is stored, the delivery is held (up to the ticket's ``hold_s``, `NEXT_INPUT_WAIT_S`
seconds by default, plus a margin)
until the caller answers with `Ticket.reply`: the machine's next call envelope (``200`` with
that body) or nothing (``204``: no more work, the machine exits). One round trip delivers a
result and fetches the next input. While such a ticket is open, a delivery of the same body
again is not refused: it rejoins the wait, and is answered with the same reply (a worker whose
held connection was lost, as a suspended machine's may be when it resumes, delivers again).
A bulk delivery (`flyjobs._wire.bulk`) stores the results of a chunk of calls at once, closes
the tickets of calls given back unrun (``on_returned``), and is answered through the ticket of
its last result.

The inbox serves HTTP with `flyjobs._aio.http_server.BoundedServer` in the current event loop:
it listens only on the address it is given, times out silent and stalled peers, caps its
connections, and logs refusals at a bounded rate. A malformed query is a 4xx. A held delivery
has no time limit from the server (only the inbox's own reply wait).

It also serves the callers' code bundles too large to travel in a machine config
(`ResultInbox.serve_code`): ``GET /code/{sha256}.zip?expires=…&sig=…``, signed as tickets are
(the worker checks the bundle against the hash sealed in its call before it unpacks it).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote

import anyio
from anyio.abc import SocketAttribute

from .._aio.http_server import BoundedServer, RateLimitedLog
from .._exceptions import SerializationError
from .._wire.bulk import BULK_HEADER, decode_bulk
from .._wire.machine import MAX_INBOX_RESULT_BYTES, NEXT_INPUT_WAIT_S
from .._wire.result_envelope import decode_result
from .._wire.seal import (
    DELIVERY_PROOF_HEADER,
    RESULT_NOT_SEALED,
    delivery_proof,
    open_result,
    ticket_id,
)

__all__ = ("ResultInbox", "Ticket")

logger = logging.getLogger("flyjobs.inbox")

_PREFIX = "/results/"
_BULK_HEADER = BULK_HEADER.lower().encode("ascii")
_CODE_PREFIX = "/code/"
#: Seconds past its ``hold_s`` a held delivery waits for its reply before it is answered
#: ``204`` anyway (the caller always replies sooner; this bounds a caller that is gone).
_REPLY_MARGIN_S = 2.0
_MAX_EXPIRES_DIGITS = 12
#: Tickets closed without a result whose late deliveries are still counted (the latest ones).
_LATE_COUNTED = 4096
#: Seconds a result delivered to the inbox may lag behind the exit it preceded (delivery is
#: acknowledged before the worker exits, so on one host this is only scheduling slack).
INBOX_RESULT_GRACE_S = 1.0

_Scope = dict[str, Any]
_Receive = Callable[[], Any]
_Send = Callable[[dict[str, Any]], Any]


class _Refused(Exception):
    def __init__(self, status: int, reason: str, *, late: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        #: a signed delivery whose ticket the caller closed (see the module docstring)
        self.late = late


class Ticket:
    """The inbox's promise to accept one result for one call.

    Use it as a context manager (or call `close`) so the inbox forgets it when the caller is
    done; deliveries after that are refused.

    :ivar call_id: the call the result is for.
    :ivar url: the signed URL the worker PUTs the result to.
    :ivar expires_at: unix time (s) after which deliveries are refused.
    :ivar on_late: called for each delivery that arrives after the ticket was closed without
        a result.
    :ivar on_returned: called with the call id when a bulk delivery gives the call back unrun
        (`flyjobs._wire.bulk`); the ticket is closed first.
    """

    __slots__ = (
        "_body",
        "_closed",
        "_event",
        "_inbox",
        "_replied",
        "_reply",
        "_token",
        "_upload",
        "call_id",
        "hold_s",
        "expires_at",
        "on_late",
        "on_returned",
        "polls",
        "replies",
        "url",
    )

    def __init__(
        self,
        inbox: ResultInbox,
        call_id: str,
        token: str,
        url: str,
        expires_at: int,
        *,
        replies: bool = False,
        hold_s: float = NEXT_INPUT_WAIT_S,
        on_late: Callable[[], None] | None = None,
        on_returned: Callable[[str], None] | None = None,
    ) -> None:
        self.on_late = on_late
        self.on_returned = on_returned
        self.replies = replies
        self.hold_s = hold_s
        self._reply: bytes | None = None
        self._replied = anyio.Event()
        self._inbox = inbox
        self._token = token
        self.call_id = call_id
        self.url = url
        self.expires_at = expires_at
        #: ignored: the inbox is told of each delivery (see `ResultTicket.polls`)
        self.polls = False
        self._event = anyio.Event()
        self._body: bytes | None = None
        self._closed = False
        #: the upload being read for this ticket (a newer one cancels it)
        self._upload: anyio.CancelScope | None = None

    @property
    def delivered(self) -> bool:
        """True once the result has been stored."""
        return self._body is not None

    async def result(self) -> bytes:
        """Wait for the result; return the delivered body (a result envelope, see
        `flyjobs._wire.result_envelope.decode_result`), already checked to be one for this call.

        Waits without a limit: wrap it in ``anyio.fail_after`` for one.

        :raises RuntimeError: the ticket was closed before a result arrived.
        """
        await self._event.wait()
        if self._body is None:
            raise RuntimeError(f"the ticket for call {self.call_id} was closed without a result")
        return self._body

    @property
    def ticket_id(self) -> str:
        """The id a result's seal is bound to (see `flyjobs._wire.seal.ticket_id`)."""
        return ticket_id(self.url)

    @property
    def spoiled(self) -> str | None:
        """Always None: the inbox refuses a delivery that is not this call's result."""
        return None

    async def look(self) -> bool:
        """Whether the result is in (the inbox is told of each delivery)."""
        return self.delivered

    async def after_exit(self) -> None:
        """The machine exited: give a result it delivered just before the time to be stored."""
        await anyio.sleep(INBOX_RESULT_GRACE_S)

    async def watch(self) -> None:
        """Nothing to look for: the inbox is told of each delivery."""

    def keep(self) -> None:
        """Nothing to keep: an inbox result lives in this process only."""

    async def aclose(self) -> None:
        """`close` (see `flyjobs._results.channel.ResultTicket.aclose`)."""
        self.close()

    def reply(self, body: bytes | None) -> None:
        """Answer the held delivery of a ``replies`` ticket: with ``body`` (the machine's next
        call envelope), or with None (no more work). Only the first reply counts."""
        if not self._replied.is_set():
            self._reply = body
            self._replied.set()

    def close(self) -> None:
        """Forget the ticket: later deliveries are refused (404) and waiters are woken (a held
        delivery is answered "no more work")."""
        if not self._closed:
            self._closed = True
            self._inbox._forget(self)
            self._event.set()
            self._replied.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "delivered" if self.delivered else "closed" if self._closed else "waiting"
        return f"<Ticket {self.call_id} {state} expires_at={self.expires_at}>"


class ResultInbox:
    """Serves the endpoint workers deliver results to; an async context manager.

    :param host: the one address to listen on.
    :param port: port to listen on; 0 picks a free one (see `port` once entered).
    :param advertise_host: the address machines use to reach this inbox (default: `host`).
    :param ttl_s: default lifetime (s) of a ticket's URL.
    :param max_body_bytes: largest result body accepted.
    :param result_key: the app secret results are authenticated with (see
        `flyjobs._wire.seal.seal_result`); a delivery whose head lacks its proof
        (`flyjobs._wire.seal.delivery_proof`), or whose body is not sealed with it, is refused
        with 403 and the ticket stays open for the genuine one; a ticket's result is the
        opened envelope. None accepts any body the URL admits.
    :param max_connections: connections held at once (see `BoundedServer`).
    :param head_timeout_s: seconds a connection has to send its request head.
    :param body_timeout_s: seconds a body may go without sending a byte.
    :param min_body_rate: bytes/s a body must average once it has sent for `body_timeout_s`.
    :param log_clock: monotonic seconds, for the rate limit of refusal logs (tests inject one).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        advertise_host: str | None = None,
        ttl_s: float = 3600.0,
        max_body_bytes: int = MAX_INBOX_RESULT_BYTES,
        result_key: str | None = None,
        max_connections: int = 256,
        head_timeout_s: float = 10.0,
        body_timeout_s: float = 10.0,
        min_body_rate: float = 16 * 1024,
        log_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.advertise_host = advertise_host or host
        self.ttl_s = ttl_s
        self.max_body_bytes = max_body_bytes
        self._requested_port = port
        self._port: int | None = None
        self._key = secrets.token_bytes(32)
        self._result_key = result_key
        self._tickets: dict[str, Ticket] = {}
        #: (call id, token) of tickets closed without a result -> their ``on_late``
        self._late: collections.OrderedDict[tuple[str, str], Callable[[], None]] = (
            collections.OrderedDict()
        )
        self._stack: contextlib.AsyncExitStack | None = None
        #: code bundles served by their path, and how many GETs each answered
        self._code: dict[str, bytes] = {}
        self.code_gets: collections.Counter[str] = collections.Counter()
        self._log = RateLimitedLog(logger, clock=log_clock)
        #: the HTTP server (its `connection_count` shows the connections held)
        self.server = BoundedServer(
            self._app,
            log=self._log,
            max_connections=max_connections,
            head_timeout_s=head_timeout_s,
            body_timeout_s=body_timeout_s,
            min_body_rate=min_body_rate,
        )

    @property
    def port(self) -> int:
        """The port the inbox listens on."""
        if self._port is None:
            raise RuntimeError("the inbox is not running; use it as `async with ResultInbox()`")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://advertise_host:port``, the origin of every ticket URL."""
        host = self.advertise_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def expect(
        self,
        call_id: str,
        ttl_s: float | None = None,
        *,
        replies: bool = False,
        hold_s: float = NEXT_INPUT_WAIT_S,
        on_late: Callable[[], None] | None = None,
        on_returned: Callable[[str], None] | None = None,
    ) -> Ticket:
        """Open a ticket for `call_id`'s result, valid for `ttl_s` seconds (default: the inbox's).

        With ``replies``, the delivery is answered with what `Ticket.reply` gives, waiting for
        it up to ``hold_s`` seconds (see the module docstring). ``on_late`` is called for each
        delivery that arrives after the ticket was closed without a result; ``on_returned``
        with the call id when a bulk delivery gives the call back unrun.

        :raises ValueError: a ticket for `call_id` is already open.
        """
        if call_id in self._tickets:
            raise ValueError(f"a ticket for call {call_id} is already open")
        expires_at = math.ceil(time.time() + (self.ttl_s if ttl_s is None else ttl_s))
        token = secrets.token_hex(8)
        path = f"{_PREFIX}{quote(call_id, safe='')}/{token}"
        url = f"{self.base_url}{path}?expires={expires_at}&sig={self._sign(path, expires_at)}"
        ticket = Ticket(
            self,
            call_id,
            token,
            url,
            expires_at,
            replies=replies,
            hold_s=hold_s,
            on_late=on_late,
            on_returned=on_returned,
        )
        self._tickets[call_id] = ticket
        return ticket

    def serve_code(self, sha256: str, data: bytes, expires_at: float) -> str:
        """Serve the code bundle ``data`` (its sha256 in hex) at a signed GET URL valid until
        ``expires_at`` (unix s); return the URL. Served until the inbox closes."""
        path = f"{_CODE_PREFIX}{sha256}.zip"
        self._code[path] = data
        expires = math.ceil(expires_at)
        return f"{self.base_url}{path}?expires={expires}&sig={self._sign(path, expires, 'GET')}"

    def _sign(self, path: str, expires_at: int, method: str = "PUT") -> str:
        message = f"{method}\n{path}\n{expires_at}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _forget(self, ticket: Ticket) -> None:
        if self._tickets.get(ticket.call_id) is ticket:
            del self._tickets[ticket.call_id]
        if ticket.on_late is not None and ticket._body is None:
            self._late[ticket.call_id, ticket._token] = ticket.on_late
            if len(self._late) > _LATE_COUNTED:
                self._late.popitem(last=False)

    async def __aenter__(self) -> Self:
        listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self._requested_port
        )
        self._port = listener.extra(SocketAttribute.local_port)
        async with contextlib.AsyncExitStack() as stack:
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self.server.serve, listener)
            stack.callback(task_group.cancel_scope.cancel)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        for ticket in list(self._tickets.values()):
            ticket.close()
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        where = f"{self.base_url}" if self._port is not None else "not running"
        return f"<ResultInbox {where} open_tickets={len(self._tickets)}>"

    # --- the ASGI application -------------------------------------------------------------

    async def _app(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
        if scope["method"] == "GET" and path.startswith(_CODE_PREFIX):
            await self._send_code(scope, path, send)
            return
        try:
            reply = await self._accept(scope, path, receive)
        except _Refused as refusal:
            if refusal.late:
                logger.debug("ignored a late result delivery to %s: %s", path, refusal.reason)
                self._count_late(path)
            else:
                self._log.warning(
                    "refused a result delivery to %s: %s (HTTP %d)",
                    path,
                    refusal.reason,
                    refusal.status,
                )
            await _respond(send, refusal.status, refusal.reason)
            return
        if reply:
            await _respond(send, 200, reply, content_type=b"application/msgpack")
        else:
            await _respond(send, 204, "")

    async def _accept(self, scope: _Scope, path: str, receive: _Receive) -> bytes | None:
        """Store a delivery's result; return the body to answer with (a held reply), if any."""
        ticket = self._check(scope, path)
        if self._result_key is not None and not _proven(scope, self._result_key, path):
            # Refused from the request head, before any of the body is read: someone who only
            # knows the URL holds no connection, and no memory, while the body trickles in.
            raise _Refused(403, RESULT_NOT_SEALED)
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            raise _Refused(413, f"body over {self.max_body_bytes} bytes")
        body = await self._read_upload(ticket, receive)
        if _header(scope, _BULK_HEADER) == b"1":
            answering = self._accept_bulk(ticket, path, body)
            if answering is None:
                return None
            return await _held_reply(answering)
        body = self._unsealed(ticket, body)
        try:
            envelope = decode_result(body)
        except SerializationError as exc:
            raise _Refused(400, str(exc)) from None
        if envelope.call_id != ticket.call_id:
            raise _Refused(400, f"the envelope is for call {envelope.call_id!r}")
        if ticket._closed:
            raise _Refused(404, "the ticket was closed during the delivery", late=True)
        _store(ticket, body)
        return await _held_reply(ticket)

    def _unsealed(self, ticket: Ticket, body: bytes) -> bytes:
        """``body`` as the worker wrote it, once its seal for ``ticket`` is checked (as it came,
        with no result key); refused (403) when it is not sealed with the result key."""
        if self._result_key is None:
            return body
        opened = open_result(self._result_key, body, ticket=ticket_id(ticket.url))
        if opened is None:
            raise _Refused(403, RESULT_NOT_SEALED)
        return opened

    async def _read_upload(self, ticket: Ticket, receive: _Receive) -> bytes:
        # One upload per ticket is read at a time, the newest: a worker that retries after a
        # lost connection replaces its stalled attempt, and a ticket never buffers two bodies.
        upload = anyio.CancelScope()
        if ticket._upload is not None:
            ticket._upload.cancel()
        ticket._upload = upload
        try:
            with upload:
                body = await self._read_body(receive)
        finally:
            if ticket._upload is upload:
                ticket._upload = None
        if upload.cancelled_caught:
            raise _Refused(409, "a newer upload to this ticket replaced this one")
        return body

    def _accept_bulk(self, ticket: Ticket, path: str, body: bytes) -> Ticket | None:
        """Store a bulk delivery's results and close the tickets of the calls it gives back
        (`flyjobs._wire.bulk`); return the ticket whose reply answers it (None: no answer).

        The seal covers the whole bulk, bound to the request's ticket (its first entry's); each
        entry names its own ticket, whose token must match. An entry whose ticket was closed is
        skipped and counted late, as a single delivery would be; one whose ticket has its
        result already is skipped.
        """
        body = self._unsealed(ticket, body)
        try:
            bulk = decode_bulk(body)
            results = [(self._entry(url), decode_result(raw), raw) for url, raw in bulk.results]
        except SerializationError as exc:
            raise _Refused(400, str(exc)) from None
        first = bulk.results[0][0] if bulk.results else bulk.returned[0]
        if _url_path(first) != path:
            raise _Refused(400, "a bulk goes to the result URL of its first entry")
        for entry, envelope, _ in results:
            if entry is not None and envelope.call_id != entry.call_id:
                raise _Refused(400, f"the envelope is for call {envelope.call_id!r}")
        answering = None
        for (url, _), (entry, _, raw) in zip(bulk.results, results, strict=True):
            if entry is None:
                self._count_late(_url_path(url))  # as a late single delivery is
            elif entry._body is None:
                entry._body = raw
                entry._event.set()
            answering = entry
        self._returned(bulk.returned)
        if not bulk.answer or answering is None or answering._closed:
            return None
        return answering

    def _returned(self, urls: list[str]) -> None:
        """Close the tickets of calls a machine gives back unrun, telling their callers."""
        for url in urls:
            entry = self._entry(url)
            if entry is not None and entry._body is None:
                on_returned = entry.on_returned
                entry.close()
                if on_returned is not None:
                    on_returned(entry.call_id)

    def _entry(self, url: str) -> Ticket | None:
        """The open ticket a bulk entry's result URL names (None: closed, expired, unknown)."""
        call_part, _, token = _url_path(url).removeprefix(_PREFIX).partition("/")
        ticket = self._tickets.get(unquote(call_part))
        if ticket is None or ticket._token != token or ticket.expires_at < time.time():
            return None
        return ticket

    def _check(self, scope: _Scope, path: str) -> Ticket:
        """The ticket a request may deliver to, or _Refused saying why not."""
        if scope["method"] != "PUT":
            raise _Refused(405, "only PUT is accepted")
        expires, signature = _query(scope)
        if not hmac.compare_digest(signature.encode(), self._sign(path, expires).encode()):
            raise _Refused(403, "bad signature")
        if expires < time.time():
            raise _Refused(410, "the URL has expired")
        call_part, _, token = path.removeprefix(_PREFIX).partition("/")
        ticket = self._tickets.get(unquote(call_part))
        if ticket is None or ticket._token != token:
            # The signature is good: this process made the URL, and closed its ticket since.
            raise _Refused(404, "no open ticket for this call", late=True)
        if ticket._body is not None and not ticket.replies:
            raise _Refused(409, "this call's result was already delivered")
        return ticket

    async def _send_code(self, scope: _Scope, path: str, send: _Send) -> None:
        try:
            expires, signature = _query(scope)
        except _Refused as refusal:
            await _respond(send, refusal.status, refusal.reason)
            return
        data = self._code.get(path)
        if not hmac.compare_digest(signature.encode(), self._sign(path, expires, "GET").encode()):
            await _respond(send, 403, "bad signature")
        elif expires < time.time():
            await _respond(send, 410, "the URL has expired")
        elif data is None:
            await _respond(send, 404, "no such code bundle")
        else:
            self.code_gets[path] += 1
            await _respond(send, 200, data, content_type=b"application/zip")

    def _count_late(self, path: str) -> None:
        call_part, _, token = path.removeprefix(_PREFIX).partition("/")
        on_late = self._late.get((unquote(call_part), token))
        if on_late is not None:
            on_late()

    async def _read_body(self, receive: _Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Refused(413, f"body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _store(ticket: Ticket, body: bytes) -> None:
    """Make ``body`` the ticket's result; on a ``replies`` ticket the same body again is a
    delivery that rejoins the wait (see the module docstring), any other a second one (409)."""
    if ticket._body is None:
        ticket._body = body
        ticket._event.set()
    elif not ticket.replies or body != ticket._body:
        raise _Refused(409, "this call's result was already delivered")


async def _held_reply(ticket: Ticket) -> bytes | None:
    """The answer to a stored delivery: for a ``replies`` ticket, the caller's reply (held)."""
    if not ticket.replies:
        return None
    with anyio.move_on_after(ticket.hold_s + _REPLY_MARGIN_S):
        await ticket._replied.wait()
    return ticket._reply


def _url_path(url: str) -> str:
    """The path of a result URL (no scheme, authority or query)."""
    rest = url.partition("://")[2]
    return "/" + rest.partition("/")[2].partition("?")[0]


def _query(scope: _Scope) -> tuple[int, str]:
    """(expires, sig) of a delivery URL's query, or _Refused(400) for any malformed query."""
    try:
        query = parse_qs(
            scope.get("query_string", b"").decode("ascii"),
            strict_parsing=True,
            max_num_fields=4,
        )
    except (UnicodeDecodeError, ValueError):
        raise _Refused(400, "malformed query") from None
    # Absent ones sign nothing: the signature check refuses them (403).
    expires = query.get("expires", ["0"])
    signature = query.get("sig", [""])
    if len(expires) != 1 or len(signature) != 1:
        raise _Refused(400, "the query needs one expires and one sig")
    # ASCII digits only, and few of them: int() would take "²" or fail on 5,000 digits.
    text = expires[0]
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_EXPIRES_DIGITS):
        raise _Refused(400, "malformed expires")
    return int(text), signature[0]


def _header(scope: _Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            found: bytes = value
            return found
    return None


def _proven(scope: _Scope, result_key: str, path: str) -> bool:
    """Whether the request head carries the delivery proof of `path` under `result_key`."""
    sent = _header(scope, DELIVERY_PROOF_HEADER.lower().encode("ascii"))
    if sent is None:
        return False
    return hmac.compare_digest(sent, delivery_proof(result_key, path).encode("ascii"))


def _content_length(scope: _Scope) -> int | None:
    value = _header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() and len(value) < 20 else None


async def _respond(
    send: _Send,
    status: int,
    content: str | bytes,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> None:
    body = content.encode() if isinstance(content, str) else content
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
