"""The one uvicorn embedding (flyjobs/_asgi_serve.py), which the emulator serves through.

It uses uvicorn's public API only; the first test names each piece, so that an upgrade that
removes one fails here, loudly, rather than somewhere inside the emulator or the inbox.
"""

from __future__ import annotations

import inspect
import signal
import socket
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from flyjobs._asgi_serve import bind_listener, serve_asgi

pytestmark = pytest.mark.anyio


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def test_uvicorn_still_offers_what_serve_asgi_uses() -> None:
    options = inspect.signature(uvicorn.Config).parameters
    used = {
        "lifespan",
        "interface",
        "http",
        "ws",
        "proxy_headers",
        "server_header",
        "date_header",
        "log_config",
        "access_log",
        "timeout_keep_alive",
        "timeout_graceful_shutdown",
        "limit_concurrency",
        "h11_max_incomplete_event_size",
    }
    assert used <= set(options), f"uvicorn.Config lost {used - set(options)}"
    assert "sockets" in inspect.signature(uvicorn.Server.serve).parameters
    assert inspect.iscoroutinefunction(uvicorn.Server.serve)
    # log_config=None, access_log=False: uvicorn's defaults would reconfigure logging process-wide.
    server = uvicorn.Server(uvicorn.Config(_hello, log_config=None, access_log=False))
    assert server.should_exit is False, "uvicorn.Server lost should_exit (how serve_asgi stops)"


async def test_serves_answers_and_stops() -> None:
    sock = bind_listener("127.0.0.1", 0)
    port = sock.getsockname()[1]
    async with serve_asgi(_hello, sock, graceful_stop_s=1):
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
    assert response.text == "hello"
    assert sock.fileno() == -1  # closed
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_the_address_works_before_the_server_runs() -> None:
    sock = bind_listener("127.0.0.1", 0)
    port = sock.getsockname()[1]
    answered = anyio.Event()
    answers: list[str] = []
    async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:

        async def early() -> None:
            answers.append((await client.get(f"http://127.0.0.1:{port}/")).text)
            answered.set()

        tg.start_soon(early)
        await anyio.sleep(0.05)  # the request waits in the kernel's queue meanwhile
        assert not answered.is_set()
        async with serve_asgi(_hello, sock, graceful_stop_s=1):
            with anyio.fail_after(10):
                await answered.wait()
    assert answers == ["hello"]


async def test_signal_handlers_are_left_as_they_were() -> None:
    before = signal.getsignal(signal.SIGINT)
    async with serve_asgi(_hello, bind_listener("127.0.0.1", 0), graceful_stop_s=1):
        pass
    assert signal.getsignal(signal.SIGINT) is before


async def test_a_server_that_fails_raises() -> None:
    sock = bind_listener("127.0.0.1", 0)
    sock.close()
    with pytest.raises(OSError):
        async with serve_asgi(_hello, sock):
            pass
