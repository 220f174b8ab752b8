"""Serve an ASGI app with uvicorn inside the running asyncio event loop.

flyjobs's one way to embed uvicorn (the emulator serves through it), on uvicorn's public API
only: ``uvicorn.Config``, ``uvicorn.Server(config).serve(sockets=...)`` in a task and
``server.should_exit`` (uvicorn's "Config and Server instances" usage), and the config's
``access_log`` set after it is made (so that uvicorn leaves the process's logging alone).
Readiness comes from the ASGI lifespan protocol, not from uvicorn's internals;
`tests/test_asgi_serve.py` fails loudly if any of this moves.

Signals: uvicorn takes SIGINT/SIGTERM while it serves from the main thread, stops, then raises
them again for the previous handlers ("cooperative" handling): Ctrl-C still reaches the host
program, after the server stopped. From any other thread (the runtime's loop thread, the
emulator's `serve_in_thread`) uvicorn leaves signals alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

__all__ = ("bind_listener", "serve_asgi")

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


def bind_listener(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to (host, port) and listening; port 0 picks a free port.

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


@contextlib.asynccontextmanager
async def serve_asgi(
    app: ASGIApp,
    sock: socket.socket,
    *,
    graceful_stop_s: int = 2,
    keep_alive_s: int = 5,
    limit_concurrency: int | None = None,
    max_header_bytes: int | None = None,
    access_log: bool = False,
) -> AsyncIterator[None]:
    """Serve `app` on the listening socket `sock` (see `bind_listener`) until the block exits.

    Yields once the app is loaded (the server accepts the connections waiting on `sock` a
    moment later). On exit the server stops accepting, gives in-flight requests up to
    `graceful_stop_s` seconds, and closes `sock`; if the exiting task is cancelled, the
    server still stops, by itself.

    :param keep_alive_s: seconds an idle keep-alive connection stays open.
    :param limit_concurrency: connections plus tasks served at once; beyond it, 503.
    :param max_header_bytes: largest request head (line and headers) read before 400;
        None keeps h11's default (16 KiB).
    :param access_log: log each request to the ``uvicorn.access`` logger.
    :raises: whatever stopped the server before it loaded the app (on entry), or later (on
        exit).
    """
    loaded = asyncio.Event()
    config = uvicorn.Config(
        _with_lifespan(app, loaded),
        lifespan="on",
        interface="asgi3",
        http="h11",
        ws="none",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_config=None,
        # True here, False below: with access_log=False uvicorn.Config removes the handlers
        # of the process-wide "uvicorn.access" logger, which turned off the access log of
        # the host program's own uvicorn once the embedded emulator started.
        access_log=True,
        timeout_keep_alive=keep_alive_s,
        timeout_graceful_shutdown=graceful_stop_s,
        limit_concurrency=limit_concurrency,
        h11_max_incomplete_event_size=max_header_bytes,
    )
    config.access_log = access_log
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    serving.add_done_callback(lambda _: sock.close())
    waiting = asyncio.create_task(loaded.wait())
    try:
        await asyncio.wait((serving, waiting), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if serving.done():
        serving.result()
        raise RuntimeError("the server stopped while starting")
    try:
        yield
    finally:
        server.should_exit = True
        # Shielded: a cancelled caller leaves the server to finish stopping on its own.
        await asyncio.shield(serving)


def _with_lifespan(app: ASGIApp, loaded: asyncio.Event) -> ASGIApp:
    """`app`, with the lifespan protocol answered here: its startup tells that the server has
    loaded the app and is about to serve."""

    async def wrapped(scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loaded.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped
