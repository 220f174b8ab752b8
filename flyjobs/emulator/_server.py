"""Run the emulator: `serve` in the current event loop, `serve_in_thread` beside it."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import resource
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
from anyio.abc import SocketListener

from .._aio import event_loop as _event_loop
from .._aio.http_server import App, BoundedServer, RateLimitedLog, bind_listener
from .._aio.quiet_logs import logs_asked, quiet_this_thread
from ._asgi import build_app
from ._config import EmulatorConfig
from ._process import wait_groups_gone
from ._state import Emulator

__all__ = ("RunningEmulator", "serve", "serve_in_thread")

#: Seconds in-flight requests may take to finish at stop (waits are answered first).
_GRACEFUL_STOP_S = 2
#: Seconds between two log lines about refused connections (one line per interval, with a
#: count of those left out, however fast a peer makes them).
_REFUSAL_LOG_INTERVAL_S = 10.0
_MIN_CONNECTIONS, _MAX_CONNECTIONS = 64, 4096

logger = logging.getLogger("flyjobs.emulator")
#: One line per request, with ``FLYJOBS_EMULATOR_LOG`` set (see `flyjobs._aio.quiet_logs`).
access_logger = logging.getLogger("flyjobs.emulator.access")


@dataclass(frozen=True, slots=True)
class RunningEmulator:
    """A running emulator.

    :ivar url: base URL without ``/v1`` (``http://127.0.0.1:43121``), for ``FLY_API_HOSTNAME``.
    :ivar token: the first accepted bearer token, for ``FLY_API_TOKEN``.
    :ivar config: the settings it runs with.
    :ivar data_dir: the folder holding machine roots and logs.
    :ivar ui_url: the dashboard's URL, carrying its key (with ``config.ui``; else None).
    """

    url: str
    token: str = field(repr=False)  # a secret: never in a repr, a log line or an error
    config: EmulatorConfig
    data_dir: Path
    ui_url: str | None = field(default=None, repr=False)  # carries the dashboard's key


@contextlib.asynccontextmanager
async def serve(
    config: EmulatorConfig, *, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[RunningEmulator]:
    """Serve the API in the current event loop until the block exits.

    ``clock`` gives the time (monotonic seconds) the rate limits and the log of refused
    connections count with; tests pass one they move by hand.

    Yields once the server answers. On exit every machine process is killed (its whole
    process group) and reaped, pending waits are answered 503, and the server stops.

    Connections are served by `flyjobs._aio.http_server.BoundedServer`, bounded as the result
    inbox is (uvicorn has no setting that closes a connection that never sends its request):
    at most ``config.max_connections`` (at the cap a new one evicts the oldest idle one), a
    request head due within ``config.head_timeout_s`` of connecting and within
    ``config.keep_alive_s`` of the last answer, a body that may not stall
    ``config.body_timeout_s``; refused connections are logged once per 10 s.
    """
    tokens = list(config.tokens) or [secrets.token_urlsafe(24)]
    sock = bind_listener(config.host, config.port)
    port = sock.getsockname()[1]
    data_dir = config.data_dir or _temporary_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    emulator = Emulator(config, data_dir)

    def abandon() -> None:
        # The interpreter exits without leaving this block: still kill every machine.
        emulator.kill_processes()
        if config.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)

    atexit.register(abandon)
    monitor = asyncio.create_task(emulator.run_monitor())
    try:
        ui_key = secrets.token_urlsafe(16) if config.ui else None
        app = build_app(emulator, tokens, clock, ui_key=ui_key)
        server = BoundedServer(
            cast(App, app),  # Starlette's ASGI types: mappings where the server gives dicts
            log=RateLimitedLog(logger, burst=1, interval_s=_REFUSAL_LOG_INTERVAL_S, clock=clock),
            max_connections=config.max_connections or _default_max_connections(),
            head_timeout_s=config.head_timeout_s,
            body_timeout_s=config.body_timeout_s,
            keep_alive_s=config.keep_alive_s,
            name="the emulator",
            access_log=access_logger if logs_asked() else None,
        )
        listener = await SocketListener.from_socket(sock)
        async with anyio.create_task_group() as tasks:
            await tasks.start(server.serve, listener)
            host = f"[{config.host}]" if ":" in config.host else config.host
            url = f"http://{host}:{port}"
            ui_url = f"{url}/ui/?key={ui_key}" if ui_key else None
            if logs_asked():
                logger.info("the emulator serves the Machines API at %s", url)
            try:
                yield RunningEmulator(url, tokens[0], config, data_dir, ui_url)
            finally:
                # Waits are answered 503 before the server stops, not cut off by it.
                groups = [m.handle.pid for m in emulator.machines.values() if m.handle]
                emulator.close()
                wait_groups_gone(groups, _GRACEFUL_STOP_S)
                with anyio.CancelScope(shield=True):
                    await server.drain(_GRACEFUL_STOP_S)
                tasks.cancel_scope.cancel()
    finally:
        atexit.unregister(abandon)
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        sock.close()
        if config.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


def _default_max_connections() -> int:
    """Half the process's descriptor limit (the rest is for machines' pipes and logs), within
    64 to 4096: connections alone never exhaust the descriptors."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 1024
    if soft == resource.RLIM_INFINITY:
        return _MAX_CONNECTIONS
    return max(_MIN_CONNECTIONS, min(_MAX_CONNECTIONS, soft // 2))


def _temporary_data_dir() -> Path:
    """A fresh temporary folder, in RAM (``/dev/shm``) when possible.

    Every run creates a root folder and a log file: on a disk filesystem that costs about a
    millisecond of CPU each, on tmpfs microseconds.
    """
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="flyjobs-emulator-", dir=where))


@contextlib.contextmanager
def serve_in_thread(
    config: EmulatorConfig, *, clock: Callable[[], float] = time.monotonic
) -> Iterator[RunningEmulator]:
    """Serve the API from a daemon thread with its own event loop until the block exits.

    Returns once the server answers; on exit stops everything as `serve` does and joins the
    thread. Errors raised while starting are raised here.
    """
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        async with serve(config, clock=clock) as running:
            box["running"] = running
            ready.set()
            await stop.wait()

    def run() -> None:
        # An emulator beside the host program stays out of its log (unless asked).
        quiet_this_thread()
        try:
            _event_loop.run(main())
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="flyjobs-emulator", daemon=True)
    thread.start()
    ready.wait()
    if "running" not in box:
        thread.join()
        raise box["error"]
    try:
        yield box["running"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join()
        if "error" in box:
            raise box["error"]
