"""The process-wide runtime of remote calls.

One daemon thread runs an event loop (behind an anyio blocking portal) that holds the Machines
client, the result inbox, the pool limiter and, when no Fly token is configured, the embedded
emulator. Every remote call runs there, whichever face (sync or async) it came from, so the
connection pool and the inbox are shared by all calls of the process.
"""

from __future__ import annotations

import atexit
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Future
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, TypeVarTuple, cast

import anyio
from anyio.abc import TaskGroup
from anyio.from_thread import BlockingPortal

from .._aio import event_loop as _event_loop
from .._aio.quiet_logs import quiet_this_thread
from .._aio.sole_error import sole_error
from .._exceptions import CallCancelledError, ConfigError
from .._output.live import LiveOutput
from .._results.channel import Channel, choose_channel
from .._results.inbox import ResultInbox
from .._results.store import Store, StoreConfig
from .._settings import Settings
from .._wire.seal import RESULT_KEY_ENV
from ..machines import MachinesClient, RateLimitSetting

__all__ = (
    "EMBEDDED_APP",
    "Runtime",
    "current_runtime",
    "current_settings",
    "get_runtime",
    "get_runtime_async",
    "shutdown_runtime",
)

T = TypeVar("T")
Args = TypeVarTuple("Args")

#: App the embedded emulator's machines run in.
EMBEDDED_APP = "flyjobs-local"
#: Image recorded on embedded machines (the emulator runs the worker command, never pulls it).
EMBEDDED_IMAGE = "flyjobs-local"
#: Name of the thread that runs the runtime's event loop.
RUNTIME_THREAD = "flyjobs-runtime"
#: Seconds shutdown waits for in-flight calls to destroy their machines.
_SHUTDOWN_GRACE_S = 30.0


@dataclass
class Runtime:
    """What every call of this process shares. Created by :func:`get_runtime`.

    :ivar settings: the settings read at start.
    :ivar client: the Machines API client.
    :ivar inbox: the result inbox the workers deliver to (in the ``inbox`` channel).
    :ivar channel: how results come back (see `flyjobs._results.channel`).
    :ivar store: the object store, if one is configured.
    :ivar app: the app machines are created in, if configured.
    :ivar image: the default image, if known.
    :ivar limiter: bounds machines in flight (``max_machines``).
    """

    settings: Settings
    client: MachinesClient
    inbox: ResultInbox
    app: str | None
    image: str | None
    limiter: anyio.CapacityLimiter
    portal: BlockingPortal = field(repr=False)
    _tasks: TaskGroup = field(repr=False)
    #: shows what calls print while they run
    live: LiveOutput = field(repr=False)
    channel: Channel = field(default_factory=lambda: Channel("inbox"))
    store: Store | None = None
    #: Set when the process is shutting down: detached calls then leave their machines be.
    closing: bool = False
    _active: set[anyio.CancelScope] = field(default_factory=set, repr=False)
    _idle: anyio.Event = field(default_factory=anyio.Event, repr=False)
    _secrets: dict[str, set[str]] = field(default_factory=dict, repr=False)
    #: Seconds from a create to the function's first start in the last batch of each function
    #: (by function and image): how soon a new batch can expect its first result
    #: (`flyjobs._batches.width`).
    boot_s: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)
    #: The app secret results are sealed with (see `flyjobs._wire.seal.seal_result`).
    result_key: str | None = field(default=None, repr=False)

    async def check_secrets(self, app: str, names: Sequence[str]) -> None:
        """Check that the app has the secrets ``names`` and the result key's (app secrets are
        injected into every machine's environment); the app's secret names are read once and
        cached.

        :raises ConfigError: naming the missing secrets and how to set them.
        """
        names = [*names, RESULT_KEY_ENV]
        missing = [n for n in names if n not in self._secrets.get(app, ())]
        if not missing:
            return
        self._secrets[app] = {s.name for s in await self.client.list_secrets(app)}
        missing = [n for n in names if n not in self._secrets[app]]
        if RESULT_KEY_ENV in missing:
            raise ConfigError(
                f"app {app!r} has no secret {RESULT_KEY_ENV}, so its machines cannot"
                f" authenticate their results: set it to the value of {RESULT_KEY_ENV} here"
                f" (`fly secrets set {RESULT_KEY_ENV}=... -a {app}`)"
            )
        if missing:
            raise ConfigError(
                f"app {app!r} has no secret(s) {', '.join(missing)}; set them with"
                f" `fly secrets set NAME=VALUE -a {app}` (or MachinesClient.set_secret)"
            )

    def submit(self, fn: Callable[[], Awaitable[T]]) -> Future[T]:
        """Run ``fn()`` on the runtime's loop, from another thread, as a tracked task; return
        its future. Tasks still running at shutdown are cancelled (and raise
        `CallCancelledError`). A task group's error arrives as itself (`sole_error`)."""
        return self.portal.start_task_soon(self._tracked, fn)

    def call(self, fn: Callable[[*Args], Awaitable[T]], *args: *Args) -> T:
        """Run ``fn(*args)`` on the runtime's loop, from another thread, and return its value.
        A task group's error arrives as itself (`sole_error`)."""
        try:
            return self.portal.call(fn, *args)
        except BaseExceptionGroup as group:
            error = sole_error(group)
        raise error

    def background(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn()`` as a tracked task, from the runtime's own loop; it must not raise."""

        async def run() -> None:
            with contextlib.suppress(CallCancelledError):
                await self._tracked(fn)

        self._tasks.start_soon(run)

    async def _tracked(self, fn: Callable[[], Awaitable[T]]) -> T:
        with anyio.CancelScope() as scope:
            self._active.add(scope)
            try:
                try:
                    return await fn()
                except BaseExceptionGroup as group:
                    error = sole_error(group)
                raise error
            finally:
                self._active.discard(scope)
                if not self._active:
                    self._idle.set()
        raise CallCancelledError("the call was cancelled because the interpreter is exiting")

    async def _cancel_all(self) -> None:
        self.closing = True
        if not self._active:
            return
        self._idle = anyio.Event()
        for scope in list(self._active):
            scope.cancel()
        with anyio.move_on_after(_SHUTDOWN_GRACE_S):
            await self._idle.wait()


_lock = threading.Lock()
_runtime: Runtime | None = None
_stack: ExitStack | None = None
_atexit_registered = False


def current_settings() -> Settings:
    """The running runtime's settings, else those `get_runtime` would start with."""
    runtime = _runtime
    return Settings.load() if runtime is None else runtime.settings


def get_runtime() -> Runtime:
    """Return the process's runtime, starting it (and the embedded emulator) on first use.

    :raises ConfigError: a setting is missing or wrong (the store's, say), as itself: never
        inside the start's ``ExceptionGroup``.
    """
    try:
        return _get_runtime()
    except BaseExceptionGroup as group:
        error = sole_error(group)
    raise error


def _get_runtime() -> Runtime:
    global _runtime, _stack, _atexit_registered
    with _lock:
        if _runtime is not None:
            return _runtime
        settings = Settings.load()
        stack = ExitStack()
        try:
            portal = stack.enter_context(_portal_thread())
            base_url, token = _api_endpoint(settings, stack)
            _runtime = stack.enter_context(
                portal.wrap_async_context_manager(_open(settings, portal, base_url, token))
            )
        except BaseException:
            stack.close()
            raise
        _stack = stack
        if not _atexit_registered:  # once, however often the runtime is restarted
            atexit.register(shutdown_runtime)
            _atexit_registered = True
        return _runtime


def current_runtime() -> Runtime | None:
    """The process's runtime if it is running (None: not started, or shut down)."""
    return _runtime


async def get_runtime_async() -> Runtime:
    """:func:`get_runtime` for async callers: a first start runs in a worker thread so the
    caller's event loop is not blocked while the emulator boots."""
    if _runtime is not None:
        return _runtime
    return await anyio.to_thread.run_sync(get_runtime)


def shutdown_runtime() -> None:
    """Cancel in-flight calls (destroying their machines) and stop the runtime."""
    global _runtime, _stack
    with _lock:
        runtime, stack = _runtime, _stack
        _runtime = _stack = None
    if runtime is None or stack is None:
        return
    with contextlib.suppress(Exception):
        runtime.portal.call(runtime._cancel_all)
    stack.close()


@contextlib.contextmanager
def _portal_thread() -> Any:
    # A daemon thread of our own rather than anyio's start_blocking_portal: that one runs on a
    # non-daemon executor thread, which the interpreter joins *before* atexit handlers run, so a
    # script would hang at exit instead of reaching shutdown_runtime.
    ready: Future[BlockingPortal] = Future()
    ended: list[BaseException] = []  # how the loop failed after it started

    def run() -> None:
        async def main() -> None:
            async with BlockingPortal() as portal:
                ready.set_result(portal)
                await portal.sleep_until_stopped()

        quiet_this_thread()
        try:
            _event_loop.run(main())
        except BaseException as exc:  # surfaced to the starting or the stopping thread below
            if ready.done():
                ended.append(exc)
            else:
                ready.set_exception(exc)

    thread = threading.Thread(target=run, name=RUNTIME_THREAD, daemon=True)
    thread.start()
    portal = ready.result()
    try:
        yield portal
    finally:
        with contextlib.suppress(RuntimeError):
            portal.call(portal.stop, True)
        thread.join(10)
        if ended:
            raise ended[0]


def _api_endpoint(settings: Settings, stack: ExitStack) -> tuple[str, str]:
    if not settings.embedded:
        if settings.api_token is None:
            # Never an emulator on a Fly machine, nor when Fly was asked for: say what is missing.
            settings.check_fly(app=None, image=None)
            raise AssertionError("unreachable: check_fly raises without a token")
        return settings.api_hostname, settings.api_token
    # Imported here: only a process without a Fly token pays for the emulator.
    from ..emulator import EmulatorConfig, serve_in_thread

    emulator = stack.enter_context(
        serve_in_thread(EmulatorConfig(tokens=[secrets.token_urlsafe(24)]))
    )
    return emulator.url, emulator.token


@asynccontextmanager
async def _open(
    settings: Settings, portal: BlockingPortal, base_url: str, token: str
) -> AsyncIterator[Runtime]:
    config = StoreConfig.load(settings.store, embedded=settings.embedded)
    channel = choose_channel(settings, has_store=config is not None)
    # The embedded emulator's machines get a fresh key as an app secret, as on Fly.
    local_key = secrets.token_urlsafe(32)
    result_key = local_key if settings.embedded else settings.result_key
    if result_key is None and settings.local_api and settings.app:
        # `flyjobs dev`: the app's own key, read (or set) through the API on this host.
        from .._results.local_api import app_result_key

        async with MachinesClient(base_url=base_url, token=token, rate_limits="off") as api:
            result_key = await app_result_key(settings, api, settings.app)
    inbox = ResultInbox(
        host=channel.bind,
        advertise_host=channel.advertise,
        result_key=result_key,
        # Each machine in flight may hold a delivery open (a batch machine waits on it for its
        # next input): room for all of them, and as many again for retries and strangers.
        max_connections=max(256, 2 * settings.max_machines),
    )
    async with (
        MachinesClient(
            base_url=base_url,
            token=token,
            rate_limits=cast(RateLimitSetting, settings.rate_limits),
        ) as client,
        inbox,
        anyio.create_task_group() as tasks,
    ):
        app, image = settings.app, settings.image
        if settings.embedded:
            app, image = EMBEDDED_APP, image or EMBEDDED_IMAGE
            await client.create_app(app, org_slug="personal")
            await client.set_secret(app, RESULT_KEY_ENV, local_key)
        store = Store(config) if config is not None else None
        yield Runtime(
            settings=settings,
            client=client,
            inbox=inbox,
            app=app,
            image=image,
            limiter=anyio.CapacityLimiter(settings.max_machines),
            portal=portal,
            _tasks=tasks,
            live=LiveOutput(client, tasks),
            channel=channel.bound(inbox, store, result_key),
            store=store,
            result_key=result_key,
        )
