"""The HTTP/1.1 server of the result inbox and the emulator: h11 over anyio sockets, bounded
against hostile peers.

uvicorn, which served both before, offers no public way to close a connection that never
sends a byte, to time out a request head, or to cap connections (``limit_concurrency`` answers
503 but keeps every connection's descriptor; ``timeout_keep_alive`` starts only after a first
answer): 1,100 idle connections exhausted a process limited to 1,024 descriptors. This server:

- holds at most `max_connections` connections. At the cap, a new connection evicts the oldest one
  still waiting for its request head, or is closed at once when every connection is busy;
- closes a connection whose request head is not complete within `head_timeout_s`, or whose body
  sends nothing for `body_timeout_s` or falls behind `min_body_rate` bytes/s (counted from
  `body_timeout_s` after the body started), so a trickle of a byte every few seconds is closed;
- serves one request per connection (``Connection: close``: a delivery is one PUT), or with
  `keep_alive_s` more, each next request head due within that many seconds of the last answer
  (a connection waiting for it is idle, and the first evicted at the cap);
- answers a request h11 cannot parse, or a head over `max_head_bytes`, with 400.

It serves an ASGI-style application (an ``http`` scope with ``method``, ``path``, ``raw_path``,
``query_string`` and ``headers``; ``receive`` and ``send`` as ASGI defines them), so the inbox's
handler does not depend on the server. No limit applies to the application's own time: an
answer may be held as long as the application likes.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import anyio
import h11
from anyio.abc import (
    ByteStream,
    Listener,
    SocketAttribute,
    SocketListener,
    SocketStream,
    TaskGroup,
    TaskStatus,
)

__all__ = ("App", "BoundedServer", "RateLimitedLog", "bind_listener")

_Message = dict[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
#: An ASGI-style application (the subset this server speaks: see the module docstring).
App = Callable[[dict[str, Any], _Receive, _Send], Awaitable[None]]

_READ_BYTES = 65536
#: Bytes of a request body the application left unread that are read and dropped to keep the
#: connection; past them it is closed.
_SKIP_BYTES = 1024 * 1024
#: Seconds the accept loop pauses when the process is out of descriptors (EMFILE), so that it
#: does not spin while the connections it holds time out.
_ACCEPT_BACKOFF_S = 0.1


def bind_listener(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to (host, port) and listening; port 0 picks a free port. Serve it
    with ``BoundedServer.serve(await SocketListener.from_socket(sock))``.

    ``::`` listens on IPv6 and IPv4. Connections made before the server runs wait in the
    kernel's queue, so the address works as soon as this returns.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on such sockets, and without it each
    # answer (headers and body are separate writes) waits on the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class RateLimitedLog:
    """Logs at most `burst` warnings per `interval_s` seconds; counts the rest and says how many
    were dropped with the next one logged. A peer that makes the inbox refuse it in a loop
    cannot grow the log faster than that.

    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: where the lines go
        self.logger = logger
        self._burst = burst
        self._interval_s = interval_s
        self._clock = clock
        self._window_start = -float("inf")
        self._logged = 0
        self._dropped = 0

    def warning(self, message: str, *args: object) -> None:
        """``logger.warning(message, *args)``, unless this window's budget is spent."""
        now = self._clock()
        if now - self._window_start >= self._interval_s:
            self._window_start, self._logged = now, 0
        if self._logged >= self._burst:
            self._dropped += 1
            return
        self._logged += 1
        if self._dropped:
            message = f"{message} ({self._dropped} similar messages were not logged)"
            self._dropped = 0
        self.logger.warning(message, *args)


class _Connection:
    __slots__ = ("awaiting_head", "scope", "stream")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.scope = anyio.CancelScope()
        self.awaiting_head = True


class BoundedServer:
    """Serves `app` on a listener until cancelled; see the module docstring for its bounds.

    :param log: where refusals of connections are logged (rate-limited by the caller's choice).
    :param max_connections: connections held at once.
    :param head_timeout_s: seconds a connection has to send its whole request head.
    :param body_timeout_s: seconds the body may go without sending a byte.
    :param max_head_bytes: largest request head (request line and headers).
    :param min_body_rate: bytes/s a body must average, after a grace of `body_timeout_s`.
    :param keep_alive_s: None serves one request per connection; a number keeps a connection
        for more, each next request head due within that many seconds (capped by
        `head_timeout_s`).
    :param name: what the log lines call this server.
    :param access_log: where to log one INFO line per request answered (None: nowhere).
    """

    def __init__(
        self,
        app: App,
        *,
        log: RateLimitedLog,
        max_connections: int = 256,
        head_timeout_s: float = 10.0,
        body_timeout_s: float = 10.0,
        max_head_bytes: int = 16 * 1024,
        min_body_rate: float = 16 * 1024,
        keep_alive_s: float | None = None,
        name: str = "the result inbox",
        access_log: logging.Logger | None = None,
    ) -> None:
        self._app = app
        self._access_log = access_log
        self.keep_alive_s = keep_alive_s
        self.name = name
        self._in_flight = 0
        self._quiet = anyio.Event()
        self._quiet.set()
        self._log = log
        self.max_connections = max_connections
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_head_bytes = max_head_bytes
        self.min_body_rate = min_body_rate
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count()

    @property
    def connection_count(self) -> int:
        """Connections held right now."""
        return len(self._connections)

    async def drain(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` seconds until no request is being answered (so that answers
        under way are sent before the server is cancelled)."""
        with anyio.move_on_after(timeout_s):
            while self._in_flight:
                await self._quiet.wait()

    async def serve(
        self,
        listener: Listener[SocketStream],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve connections until cancelled; the listener is closed at the end.

        :param listener: a `SocketListener`, or the `anyio.streams.stapled.MultiListener` of
            them that `anyio.create_tcp_listener` returns.
        """
        sockets: list[SocketListener] = list(getattr(listener, "listeners", [listener]))
        async with listener, anyio.create_task_group() as tasks:
            for socket_listener in sockets:
                tasks.start_soon(self._accept_loop, socket_listener, tasks)
            task_status.started()

    async def _accept_loop(self, listener: SocketListener, tasks: TaskGroup) -> None:
        # Our own loop rather than Listener.serve, which ends at the first accept error.
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # Out of descriptors (or a connection reset before it was accepted): the
                # connections held time out and free theirs.
                self._log.warning("%s could not accept a connection: %s", self.name, exc)
                await anyio.sleep(_ACCEPT_BACKOFF_S)
                continue
            await self._admit(stream, tasks)

    async def _admit(self, stream: ByteStream, tasks: TaskGroup) -> None:
        if len(self._connections) >= self.max_connections:
            idle = next((c for c in self._connections.values() if c.awaiting_head), None)
            if idle is None:
                self._log.warning(
                    "%s holds %d busy connections; closed a new one",
                    self.name,
                    len(self._connections),
                )
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                return
            self._log.warning(
                "%s holds %d connections; closed the oldest one still silent",
                self.name,
                len(self._connections),
            )
            idle.scope.cancel()
        connection = _Connection(stream)
        key = next(self._ids)
        self._connections[key] = connection
        tasks.start_soon(self._run, key, connection)

    async def _run(self, key: int, connection: _Connection) -> None:
        try:
            with connection.scope:
                await self._exchange(connection)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, h11.ProtocolError):
            pass  # the peer went away, or broke the protocol after its request
        finally:
            self._connections.pop(key, None)
            with anyio.CancelScope(shield=True):
                await connection.stream.aclose()

    async def _exchange(self, connection: _Connection) -> None:
        stream = connection.stream
        h11_conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head_bytes)
        head_timeout_s = self.head_timeout_s
        served = 0
        while True:
            connection.awaiting_head = True
            try:
                with anyio.fail_after(head_timeout_s):
                    request = await _next_event(h11_conn, stream)
            except TimeoutError:
                if not served:  # a kept-alive connection's silence is no refusal
                    self._log.warning(
                        "%s closed a connection that sent no request in time", self.name
                    )
                return
            except h11.RemoteProtocolError as exc:
                self._log.warning("%s refused a malformed request: %s", self.name, exc)
                await _send_error(h11_conn, stream, 400)
                return
            if not isinstance(request, h11.Request):
                return  # closed before a request
            connection.awaiting_head = False
            if not await self._answer(h11_conn, stream, request):
                return
            h11_conn.start_next_cycle()
            served += 1
            assert self.keep_alive_s is not None
            head_timeout_s = min(self.keep_alive_s, self.head_timeout_s)

    async def _answer(
        self, h11_conn: h11.Connection, stream: ByteStream, request: h11.Request
    ) -> bool:
        """Run the application on `request`; whether the connection may serve another."""
        keep_alive = self.keep_alive_s is not None
        exchange = _Exchange(h11_conn, stream, self.body_timeout_s, self.min_body_rate, keep_alive)
        if not self._in_flight:
            self._quiet = anyio.Event()
        self._in_flight += 1
        try:
            await self._app(_scope(request, stream), exchange.receive, exchange.send)
        except Exception:
            if exchange.peer_gone:
                return False  # the peer went away, or did not read its answer
            self._log.logger.exception("%s: the handler failed", self.name)
            if not exchange.started:
                await _send_error(h11_conn, stream, 500)
            return False
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._quiet.set()
            if self._access_log is not None:
                client = _address(stream, SocketAttribute.remote_address) or ("-", 0)
                self._access_log.info(
                    '%s:%d - "%s %s HTTP/%s" %d',
                    *client,
                    request.method.decode("ascii"),
                    request.target.decode("latin-1"),
                    request.http_version.decode("ascii"),
                    exchange.status,
                )
        if not exchange.reusable or h11_conn.our_state is not h11.DONE:
            return False
        # The rest of a body the application did not read (an answer given from the head
        # alone) is read and dropped, up to a bound, so the connection can serve the next
        # request; closing with it unread would reset the connection under the answer.
        skipped = 0
        with anyio.move_on_after(self.body_timeout_s):
            while h11_conn.their_state is h11.SEND_BODY and skipped <= _SKIP_BYTES:
                try:
                    event = await _next_event(h11_conn, stream)
                except h11.RemoteProtocolError:
                    return False
                if isinstance(event, h11.Data):
                    skipped += len(event.data)
                elif not isinstance(event, h11.EndOfMessage):
                    return False
        return h11_conn.their_state is h11.DONE


class _Exchange:
    """``receive`` and ``send`` of one request, in ASGI's terms."""

    def __init__(
        self,
        conn: h11.Connection,
        stream: ByteStream,
        body_timeout_s: float,
        min_rate: float,
        keep_alive: bool = False,
    ) -> None:
        self._keep_alive = keep_alive
        #: the connection may serve another request after this one
        self.reusable = keep_alive
        #: sending the answer failed: the peer went away (or stopped reading)
        self.peer_gone = False
        self._conn = conn
        self._stream = stream
        self._body_timeout_s = body_timeout_s
        self._min_rate = min_rate
        self._body_started: float | None = None
        self._received = 0
        self._body_done = False
        #: the answer's status (500 until the application gives one)
        self.status = 500
        self._headers: list[tuple[bytes, bytes]] = []
        self.started = False

    async def receive(self) -> _Message:
        if self._body_done:
            # Nothing more to read: what is left to learn is when the peer goes away. What it
            # sends meanwhile (its next request) is kept for the next exchange.
            kept = 0
            while True:
                try:
                    data = await self._stream.receive(_READ_BYTES)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return {"type": "http.disconnect"}
                kept += len(data)
                if not self._keep_alive or kept > _READ_BYTES:
                    # A peer that floods a connection waiting for its answer is let go.
                    self.reusable = False
                    return {"type": "http.disconnect"}
                self._conn.receive_data(data)
        if self._conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        now = anyio.current_time()
        if self._body_started is None:
            self._body_started = now
        # The body's whole schedule: a grace of body_timeout_s, then min_rate bytes/s.
        behind_at = self._body_started + self._body_timeout_s + self._received / self._min_rate
        try:
            with anyio.fail_after(min(self._body_timeout_s, behind_at - now)):
                event = await _next_event(self._conn, self._stream)
        except (TimeoutError, h11.RemoteProtocolError):
            return {"type": "http.disconnect"}
        if isinstance(event, h11.Data):
            self._received += len(event.data)
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        if isinstance(event, h11.EndOfMessage):
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(self, message: _Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self._headers = list(message.get("headers", []))
            return
        if message["type"] != "http.response.body":
            return
        if not self.started:
            self.started = True
            headers = self._headers
            if not self._keep_alive:
                headers = [*headers, (b"connection", b"close")]
            response = h11.Response(
                status_code=self.status, headers=headers, reason=_reason(self.status)
            )
            await self._send(response)
        body = message.get("body", b"")
        if body:
            await self._send(h11.Data(data=body))
        if not message.get("more_body", False):
            await self._send(h11.EndOfMessage())

    async def _send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            try:
                # A peer that does not read its answer does not hold the connection forever.
                with anyio.fail_after(self._body_timeout_s):
                    await self._stream.send(data)
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.peer_gone = True
                raise


async def _next_event(conn: h11.Connection, stream: ByteStream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(_READ_BYTES)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            data = b""
        conn.receive_data(data)


async def _send_error(conn: h11.Connection, stream: ByteStream, status: int) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    try:
        headers = [(b"content-length", b"0"), (b"connection", b"close")]
        with anyio.fail_after(1.0):
            head = h11.Response(status_code=status, headers=headers, reason=_reason(status))
            await stream.send(conn.send(head) or b"")
            await stream.send(conn.send(h11.EndOfMessage()) or b"")
    except (TimeoutError, h11.LocalProtocolError, anyio.BrokenResourceError, OSError):
        pass


def _scope(request: h11.Request, stream: ByteStream) -> dict[str, Any]:
    raw_path, _, query = bytes(request.target).partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "http",
        "root_path": "",
        "server": _address(stream, SocketAttribute.local_address),
        "client": _address(stream, SocketAttribute.remote_address),
        "http_version": request.http_version.decode("ascii"),
        "method": request.method.decode("ascii"),
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "headers": [(name.lower(), value) for name, value in request.headers],
    }


def _reason(status: int) -> bytes:
    """The status line's reason phrase (``Not Found``), as most servers send one."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _address(stream: ByteStream, attribute: Any) -> tuple[str, int] | None:
    """(host, port) of a TCP stream's end, for the scope's ``server`` and ``client``."""
    address = stream.extra(attribute, None)
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None
