"""The result inbox: an HTTP endpoint this process serves, where workers PUT their results.

Each expected call gets a `Ticket` whose URL is the only way to deliver that call's result::

    http://{advertise_host}:{port}/results/{call_id}/{token}?expires={unix s}&sig={hex}

``token`` is fresh for every ticket, so a late delivery for an earlier attempt of the same call
id finds no ticket. ``sig`` is an HMAC-SHA256, under a key made for this inbox and never shown,
of the method, the path and the expiry. A delivery is refused with 403 (signature does not
match, or the body lacks the MAC of the app's result key), 410 (expired), 404 (no open ticket),
409 (the ticket already has its result), 413 (body over ``max_body_bytes``) or 400 (not a flyjobs
result envelope for this call); it is answered 204 only after the result is stored, so a
result the worker saw accepted is never lost.

A ticket opened with ``replies=True`` belongs to a machine that takes more than one input: once
its result is stored, the delivery is held (up to `NEXT_INPUT_WAIT_S` seconds, plus a margin)
until the caller answers with `Ticket.reply`: the machine's next call envelope (``200`` with
that body) or nothing (``204``: no more work, the machine exits). One round trip delivers a
result and fetches the next input.

The inbox runs uvicorn in the current event loop (asyncio only: uvicorn needs it).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import socket
import time
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote

import anyio
import uvicorn
from anyio.abc import TaskStatus

from ._exceptions import SerializationError
from ._protocol import MAX_INBOX_RESULT_BYTES, NEXT_INPUT_WAIT_S, open_result
from ._result_envelope import decode_result

__all__ = ("ResultInbox", "Ticket")

logger = logging.getLogger("flyjobs.inbox")

_PREFIX = "/results/"
#: Seconds past `NEXT_INPUT_WAIT_S` a held delivery waits for its reply before it is answered
#: ``204`` anyway (the caller always replies sooner; this bounds a caller that is gone).
_REPLY_MARGIN_S = 2.0

_Scope = dict[str, Any]
_Receive = Callable[[], Any]
_Send = Callable[[dict[str, Any]], Any]


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Ticket:
    """The inbox's promise to accept one result for one call.

    Use it as a context manager (or call `close`) so the inbox forgets it when the caller is
    done; deliveries after that are refused.

    :ivar call_id: the call the result is for.
    :ivar url: the signed URL the worker PUTs the result to.
    :ivar expires_at: unix time (s) after which deliveries are refused.
    """

    __slots__ = (
        "_body",
        "_closed",
        "_event",
        "_inbox",
        "_replied",
        "_reply",
        "_token",
        "call_id",
        "expires_at",
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
    ) -> None:
        self.replies = replies
        self._reply: bytes | None = None
        self._replied = anyio.Event()
        self._inbox = inbox
        self._token = token
        self.call_id = call_id
        self.url = url
        self.expires_at = expires_at
        self._event = anyio.Event()
        self._body: bytes | None = None
        self._closed = False

    @property
    def delivered(self) -> bool:
        """True once the result has been stored."""
        return self._body is not None

    async def result(self) -> bytes:
        """Wait for the result; return the delivered body (a result envelope, see
        `flyjobs._result_envelope.decode_result`), already checked to be one for this call.

        Waits without a limit: wrap it in ``anyio.fail_after`` for one.

        :raises RuntimeError: the ticket was closed before a result arrived.
        """
        await self._event.wait()
        if self._body is None:
            raise RuntimeError(f"the ticket for call {self.call_id} was closed without a result")
        return self._body

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


class _Server(uvicorn.Server):
    """uvicorn's server, adapted to live inside a library's event loop."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._stop = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn would take over SIGINT/SIGTERM for the whole process; Ctrl-C belongs to the
        # application that embeds the inbox.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._on_started()

    async def main_loop(self) -> None:
        # Instead of uvicorn's 10 Hz polling of `should_exit`: sleep until asked to stop.
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    def close_listeners(self) -> None:
        """Stop accepting connections at once (when the serving task is cancelled)."""
        for server in getattr(self, "servers", ()):
            server.close()


class ResultInbox:
    """Serves the endpoint workers deliver results to; an async context manager.

    :param host: address to listen on (``"::"`` listens on IPv6 and IPv4).
    :param port: port to listen on; 0 picks a free one (see `port` once entered).
    :param advertise_host: the address machines use to reach this inbox (default: `host`).
    :param ttl_s: default lifetime (s) of a ticket's URL.
    :param max_body_bytes: largest result body accepted.
    :param result_key: the app secret results are authenticated with (see
        `flyjobs._protocol.seal_result`); a delivery not sealed with it is refused with 403 and
        the ticket stays open for the genuine one; a ticket's result is the opened envelope.
        None accepts any body the URL admits.
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
        self._stack: contextlib.AsyncExitStack | None = None
        self._server: _Server | None = None

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

    def expect(self, call_id: str, ttl_s: float | None = None, *, replies: bool = False) -> Ticket:
        """Open a ticket for `call_id`'s result, valid for `ttl_s` seconds (default: the inbox's).

        With ``replies``, the delivery is answered with what `Ticket.reply` gives (see the
        module docstring).

        :raises ValueError: a ticket for `call_id` is already open.
        """
        if call_id in self._tickets:
            raise ValueError(f"a ticket for call {call_id} is already open")
        expires_at = math.ceil(time.time() + (self.ttl_s if ttl_s is None else ttl_s))
        token = secrets.token_hex(8)
        path = f"{_PREFIX}{quote(call_id, safe='')}/{token}"
        url = f"{self.base_url}{path}?expires={expires_at}&sig={self._sign(path, expires_at)}"
        ticket = Ticket(self, call_id, token, url, expires_at, replies=replies)
        self._tickets[call_id] = ticket
        return ticket

    def _sign(self, path: str, expires_at: int) -> str:
        message = f"PUT\n{path}\n{expires_at}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _forget(self, ticket: Ticket) -> None:
        if self._tickets.get(ticket.call_id) is ticket:
            del self._tickets[ticket.call_id]

    async def __aenter__(self) -> Self:
        sock = _bind(self.host, self._requested_port)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            http="h11",
            ws="none",
            proxy_headers=False,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
        )
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(sock.close)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self._serve, config, sock)
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
        if self._server is not None:
            self._server.stop()
        return await stack.__aexit__(exc_type, exc, tb)

    async def _serve(
        self, config: uvicorn.Config, sock: socket.socket, *, task_status: TaskStatus[None]
    ) -> None:
        server = _Server(config, on_started=task_status.started)
        self._server = server
        try:
            await server.serve(sockets=[sock])
        finally:
            # Already done when serve returns; needed when the task is cancelled instead.
            server.close_listeners()

    def __repr__(self) -> str:
        where = f"{self.base_url}" if self._port is not None else "not running"
        return f"<ResultInbox {where} open_tickets={len(self._tickets)}>"

    # --- the ASGI application -------------------------------------------------------------

    async def _app(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
        try:
            reply = await self._accept(scope, path, receive)
        except _Refused as refusal:
            logger.warning(
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
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            raise _Refused(413, f"body over {self.max_body_bytes} bytes")
        # Deliveries to one ticket may run side by side: a stalled or forged upload must not
        # hold the ticket against the genuine one. The first complete, authentic one wins.
        body = await self._read_body(receive)
        if self._result_key is not None:
            opened = open_result(self._result_key, body)
            if opened is None:
                raise _Refused(403, "the result is not authenticated by the app's result key")
            body = opened
        try:
            envelope = decode_result(body)
        except SerializationError as exc:
            raise _Refused(400, str(exc)) from None
        if envelope.call_id != ticket.call_id:
            raise _Refused(400, f"the envelope is for call {envelope.call_id!r}")
        if ticket._closed:
            raise _Refused(404, "the ticket was closed during the delivery")
        if ticket._body is not None:
            raise _Refused(409, "this call's result was already delivered")
        ticket._body = body
        ticket._event.set()
        if not ticket.replies:
            return None
        with anyio.move_on_after(NEXT_INPUT_WAIT_S + _REPLY_MARGIN_S):
            await ticket._replied.wait()
        return ticket._reply

    def _check(self, scope: _Scope, path: str) -> Ticket:
        """The ticket a request may deliver to, or _Refused saying why not."""
        if scope["method"] != "PUT":
            raise _Refused(405, "only PUT is accepted")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        expires = query.get("expires", [""])[0]
        signature = query.get("sig", [""])[0]
        if not expires.isdigit() or not hmac.compare_digest(
            signature.encode(), self._sign(path, int(expires)).encode()
        ):
            raise _Refused(403, "bad signature")
        if int(expires) < time.time():
            raise _Refused(410, "the URL has expired")
        call_part, _, token = path.removeprefix(_PREFIX).partition("/")
        ticket = self._tickets.get(unquote(call_part))
        if ticket is None or ticket._token != token:
            raise _Refused(404, "no open ticket for this call")
        if ticket._body is not None:
            raise _Refused(409, "this call's result was already delivered")
        return ticket

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


def _header(scope: _Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            found: bytes = value
            return found
    return None


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


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port); ``::`` also accepts IPv4."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
