"""The ``@remote`` decorator and the remote function object it makes.

Kept light on purpose: a user's module imports this at decoration time, and that module is also
imported by the worker on every machine, so the client machinery (httpx, pydantic, the runtime)
is imported only when a call is actually made, and ``typing`` not at all (see ``_typing``).
"""

from __future__ import annotations

import functools

from .._aio.blocking import warn_if_in_event_loop
from .._exceptions import ConfigError, SerializationError
from .._typing import Generic, ParamSpec, TypeVar, overload
from .options import CallOptions
from .pool import Pool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
    from typing import Any, Literal, TypedDict, Unpack

    from .._batches.map import MapResults, _MapRun
    from .._calls.handle import Call
    from .options import Options

    class MapSettings(TypedDict, total=False):
        """The batch settings of ``fn.map``/``fn.starmap`` (see ``fn.map``)."""

        max_machines: int | None
        reuse: bool
        max_failures: int | None
        progress: bool | None
        batch: str | None
        output: Literal["live", "errors", "none"] | None
        max_cost_usd: float | None
        standby: bool | None


#: The keyword settings of ``fn.map``/``fn.starmap`` besides order_outputs/return_exceptions.
_MAP_SETTINGS = (
    "max_machines",
    "reuse",
    "max_failures",
    "progress",
    "batch",
    "output",
    "max_cost_usd",
    "standby",
)

P = ParamSpec("P")
# Covariant: pyright types an ``async def``'s value as ``CoroutineType[..., T]``, which matches
# the overloads for ``Function[P, Coroutine[..., T]]`` only as a subtype of it.
R = TypeVar("R", covariant=True)
T = TypeVar("T")
# The function's signature (with an ``async def``'s awaited value), as the map faces see it.
F = TypeVar("F", covariant=True)
A1 = TypeVar("A1")
A2 = TypeVar("A2")
A3 = TypeVar("A3")

__all__ = ("Function", "remote")


class _RemoteFace(Generic[P, R]):
    """``fn.remote(...)`` runs one call and returns its value; ``await fn.remote.aio(...)`` is the
    same from async code."""

    __slots__ = ("_function",)

    # Function[P, R], or for an ``async def`` Function[P, Coroutine[..., R]] (`_RemoteAttribute`).
    def __init__(self, function: Function[P, Any]) -> None:
        self._function = function

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        warn_if_in_event_loop("fn.remote()", "`await fn.remote.aio(...)`")
        call: Call[R] | None = None
        try:
            call = self._function.spawn(*args, **kwargs)
            return call.result()
        except KeyboardInterrupt:
            # Ctrl-C (or a Jupyter interrupt) abandons the call: its machine goes too.
            if call is not None:
                call.cancel()
            raise
        except Exception as exc:
            if _is_remote(exc):  # see is_remote: the caller's frames only
                raise exc.with_traceback(None)  # noqa: B904 - itself, re-raised
            raise

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one call on a machine and await its value."""
        from .._calls.runtime import get_runtime_async  # lazy: keeps decoration light

        await get_runtime_async()
        call: Call[R] = self._function.spawn(*args, **kwargs)
        try:
            return await call.result_async()
        except Exception as exc:
            if _is_remote(exc):  # see is_remote: the caller's frames only
                raise exc.with_traceback(None)  # noqa: B904 - itself, re-raised
            raise


class _MapFace(Generic[F]):
    """``fn.map(*iterables)`` calls the function once per input on a batch of machines and
    yields the values; ``async for value in fn.map.aio(*iterables)`` is the same from async
    code.

    Typed by the function's signature ``F``: each iterable's items are checked against the
    parameter they fill (up to three; more iterables are not checked) and the values have the
    function's return type (an ``async def``'s awaited value), or are the exception of a failed
    input with ``return_exceptions=True``.
    """

    __slots__ = ("_function",)

    def __init__(self, function: Function[..., Any]) -> None:
        self._function = function

    @overload
    def __call__(
        self: _MapFace[Callable[[A1], T]],
        iterable: Iterable[A1],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T]: ...

    @overload
    def __call__(
        self: _MapFace[Callable[[A1], T]],
        iterable: Iterable[A1],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T | Exception]: ...

    @overload
    def __call__(
        self: _MapFace[Callable[[A1, A2], T]],
        iterable: Iterable[A1],
        iterable2: Iterable[A2],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T]: ...

    @overload
    def __call__(
        self: _MapFace[Callable[[A1, A2], T]],
        iterable: Iterable[A1],
        iterable2: Iterable[A2],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T | Exception]: ...

    @overload
    def __call__(
        self: _MapFace[Callable[[A1, A2, A3], T]],
        iterable: Iterable[A1],
        iterable2: Iterable[A2],
        iterable3: Iterable[A3],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T]: ...

    @overload
    def __call__(
        self: _MapFace[Callable[[A1, A2, A3], T]],
        iterable: Iterable[A1],
        iterable2: Iterable[A2],
        iterable3: Iterable[A3],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T | Exception]: ...

    @overload
    def __call__(
        self: _MapFace[Callable[..., T]],
        iterable: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        iterable4: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T]: ...

    @overload
    def __call__(
        self: _MapFace[Callable[..., T]],
        iterable: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        iterable4: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T | Exception]: ...

    def __call__(
        self,
        *iterables: Iterable[Any],
        order_outputs: bool = True,
        return_exceptions: bool = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[Any]:
        """Call the function once per input, zipped from ``iterables`` as in built-in ``map``.

        The inputs are read lazily, a bounded window ahead of what you have consumed (a
        generator of millions of items works, and a ``break`` stops reading it); each is
        encoded as it is read, and one that cannot be is that input's
        :class:`~flyjobs.SerializationError` (naming its index).

        Up to ``max_machines`` machines run the batch, created at the API's create rate; each
        takes its next input as it finishes one (``reuse=False``: one machine per input). A
        machine that dies holding an input is replaced and the input retried (``retries=``).

        :param order_outputs: yield in input order (default), or as inputs finish.
        :param return_exceptions: yield a failed input's exception in place of its value
            instead of raising it.
        :param max_machines: machines of this map at once (default: ``FLYJOBS_MAX_MACHINES``,
            which also bounds all calls of the process together).
        :param reuse: machines take more than one input (default True).
        :param max_failures: with ``return_exceptions``, stop the map after this many failed
            inputs: :class:`~flyjobs.TooManyFailuresError` carries the failures.
        :param progress: show progress on stderr (a live bar on a terminal, plain lines
            otherwise); default: when stderr is a terminal.
        :param batch: a name that makes the map resumable: every input that returns is
            recorded in the batch's journal, and a map with the same name and function runs
            only the inputs not recorded yet, yielding the recorded values in their place
            (see ``flyjobs batch ls|rm``); an input whose recorded value cannot be decoded
            (its class changed since, say) runs again.
        :param output: what the lines the inputs print show here: ``"errors"`` (only what
            failed inputs printed, and once a line saying how to see the rest), ``"live"``
            (every line, as it is printed) or ``"none"``; default: the function's ``output``
            option, else ``FLYJOBS_OUTPUT``, else ``"errors"``.
        :param max_cost_usd: a cap in USD (see docs/operations/costs.md): before a machine
            is created or handed another input, what the batch spent, what its running
            machines may still cost and what that would cost (up to ``timeout_s``) must stay
            within it; else no more inputs are handed out, and the inputs not run end with
            :class:`~flyjobs.BudgetExceededError` (raised, or yielded with
            ``return_exceptions``). A resumed batch counts what its earlier runs spent.
        :param standby: first claim free standby machines of the function's shape (made with
            ``flyjobs standby create``) and start them all at once, creating machines only
            beyond them; each is stopped and given back before the map returns (default:
            ``FLYJOBS_STANDBY`` or ``[tool.flyjobs] standby``, else False).
        :return: an iterator of the values; its ``summary()`` tells counts, timings and cost
            (``cost_usd``), and each ``Outcome`` its ``cost_usd``.
        :raises ConfigError: before any machine, for no iterable, an unknown setting (call
            options such as ``timeout_s`` go through ``fn.with_options``), or a setting of the
            wrong type or range.
        :raises: the first failure (unless ``return_exceptions``). However the map ends
            (exhausted, ``break``, an error, Ctrl-C, SIGTERM), every machine of the batch is
            destroyed before it returns or raises.
        """
        _check_iterables(iterables)
        return self._function._map(
            zip(*iterables, strict=False),
            iterables,
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
            **settings,
        )

    @overload
    def aio(
        self: _MapFace[Callable[[A1], T]],
        iterable: Iterable[A1],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> AsyncGenerator[T, None]: ...

    @overload
    def aio(
        self: _MapFace[Callable[[A1], T]],
        iterable: Iterable[A1],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> AsyncGenerator[T | Exception, None]: ...

    @overload
    def aio(
        self: _MapFace[Callable[[A1, A2], T]],
        iterable: Iterable[A1],
        iterable2: Iterable[A2],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> AsyncGenerator[T, None]: ...

    @overload
    def aio(
        self: _MapFace[Callable[[A1, A2], T]],
        iterable: Iterable[A1],
        iterable2: Iterable[A2],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> AsyncGenerator[T | Exception, None]: ...

    @overload
    def aio(
        self: _MapFace[Callable[[A1, A2, A3], T]],
        iterable: Iterable[A1],
        iterable2: Iterable[A2],
        iterable3: Iterable[A3],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> AsyncGenerator[T, None]: ...

    @overload
    def aio(
        self: _MapFace[Callable[[A1, A2, A3], T]],
        iterable: Iterable[A1],
        iterable2: Iterable[A2],
        iterable3: Iterable[A3],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> AsyncGenerator[T | Exception, None]: ...

    @overload
    def aio(
        self: _MapFace[Callable[..., T]],
        iterable: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        iterable4: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> AsyncGenerator[T, None]: ...

    @overload
    def aio(
        self: _MapFace[Callable[..., T]],
        iterable: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        iterable4: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> AsyncGenerator[T | Exception, None]: ...

    async def aio(
        self,
        *iterables: Iterable[Any],
        order_outputs: bool = True,
        return_exceptions: bool = False,
        **settings: Unpack[MapSettings],
    ) -> AsyncGenerator[Any, None]:
        """The async face of ``fn.map``: ``async for value in fn.map.aio(...)``.

        To leave early, close it (``async with contextlib.aclosing(fn.map.aio(xs)) as
        values:``): closing waits until the machines of the batch are destroyed. A loop left
        by ``break`` without that leaves the closing to the garbage collector and the event
        loop, as for any async generator.
        """
        from contextlib import aclosing  # lazy: keeps decoration light

        from .._batches.map import map_async  # lazy: keeps decoration light
        from .._calls.runtime import get_runtime_async  # lazy: keeps decoration light

        _check_iterables(iterables)
        await get_runtime_async()
        run = self._function._start_map(
            zip(*iterables, strict=False),
            iterables,
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
            **settings,
        )
        # Closed with this generator, not later by the loop's finalizer.
        async with aclosing(map_async(run, return_exceptions=return_exceptions)) as values:
            try:
                async for value in values:
                    yield value
            except Exception as exc:
                if _is_remote(exc):  # see is_remote: the caller's frames only
                    raise exc.with_traceback(None)  # noqa: B904 - itself, re-raised
                raise


class _StarmapFace(Generic[F]):
    """``fn.starmap(arg_tuples)``: ``fn.map`` with each input a tuple of positional arguments.

    Typed by the function's signature ``F`` as ``fn.map`` is: each tuple's items are checked
    against the parameters (tuples of up to three; longer ones are not checked).
    """

    __slots__ = ("_function",)

    def __init__(self, function: Function[..., Any]) -> None:
        self._function = function

    @overload
    def __call__(
        self: _StarmapFace[Callable[[], T]],
        inputs: Iterable[tuple[()]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T]: ...

    @overload
    def __call__(
        self: _StarmapFace[Callable[[], T]],
        inputs: Iterable[tuple[()]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T | Exception]: ...

    @overload
    def __call__(
        self: _StarmapFace[Callable[[A1], T]],
        inputs: Iterable[tuple[A1]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T]: ...

    @overload
    def __call__(
        self: _StarmapFace[Callable[[A1], T]],
        inputs: Iterable[tuple[A1]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T | Exception]: ...

    @overload
    def __call__(
        self: _StarmapFace[Callable[[A1, A2], T]],
        inputs: Iterable[tuple[A1, A2]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T]: ...

    @overload
    def __call__(
        self: _StarmapFace[Callable[[A1, A2], T]],
        inputs: Iterable[tuple[A1, A2]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T | Exception]: ...

    @overload
    def __call__(
        self: _StarmapFace[Callable[[A1, A2, A3], T]],
        inputs: Iterable[tuple[A1, A2, A3]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T]: ...

    @overload
    def __call__(
        self: _StarmapFace[Callable[[A1, A2, A3], T]],
        inputs: Iterable[tuple[A1, A2, A3]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T | Exception]: ...

    @overload
    def __call__(
        self: _StarmapFace[Callable[..., T]],
        inputs: Iterable[tuple[Any, Any, Any, Any, *tuple[Any, ...]]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: Literal[False] = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T]: ...

    @overload
    def __call__(
        self: _StarmapFace[Callable[..., T]],
        inputs: Iterable[tuple[Any, Any, Any, Any, *tuple[Any, ...]]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[T | Exception]: ...

    def __call__(
        self,
        inputs: Iterable[Sequence[Any]],
        /,
        *,
        order_outputs: bool = True,
        return_exceptions: bool = False,
        **settings: Unpack[MapSettings],
    ) -> MapResults[Any]:
        """Like ``fn.map``, with each input a tuple of positional arguments."""
        return self._function._map(
            inputs,
            (inputs,),
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
            **settings,
        )


class _MapAttribute:
    """``fn.map``: the map face of the function it is read from, typed by its signature
    (a descriptor, as `_RemoteAttribute` is: an ``async def`` function's values are the awaited
    ones)."""

    __slots__ = ()

    @overload
    def __get__(self, instance: None, owner: type) -> _MapAttribute: ...

    @overload
    def __get__(
        self, instance: Function[P, Coroutine[Any, Any, T]], owner: type
    ) -> _MapFace[Callable[P, T]]: ...

    @overload
    def __get__(self, instance: Function[P, T], owner: type) -> _MapFace[Callable[P, T]]: ...

    def __get__(self, instance: Function[..., Any] | None, owner: type) -> Any:
        return self if instance is None else _MapFace(instance)


class _StarmapAttribute:
    """``fn.starmap``: the starmap face of the function it is read from, typed by its signature
    (a descriptor, as `_RemoteAttribute` is: an ``async def`` function's values are the awaited
    ones)."""

    __slots__ = ()

    @overload
    def __get__(self, instance: None, owner: type) -> _StarmapAttribute: ...

    @overload
    def __get__(
        self, instance: Function[P, Coroutine[Any, Any, T]], owner: type
    ) -> _StarmapFace[Callable[P, T]]: ...

    @overload
    def __get__(self, instance: Function[P, T], owner: type) -> _StarmapFace[Callable[P, T]]: ...

    def __get__(self, instance: Function[..., Any] | None, owner: type) -> Any:
        return self if instance is None else _StarmapFace(instance)


class _RemoteAttribute:
    """``fn.remote``: the remote face of the function it is read from. A descriptor rather than
    a property so that type checkers see the value of an ``async def`` function's call (the
    worker awaits the coroutine), not the coroutine."""

    __slots__ = ()

    @overload
    def __get__(self, instance: None, owner: type) -> _RemoteAttribute: ...

    @overload
    def __get__(
        self, instance: Function[P, Coroutine[Any, Any, T]], owner: type
    ) -> _RemoteFace[P, T]: ...

    @overload
    def __get__(self, instance: Function[P, T], owner: type) -> _RemoteFace[P, T]: ...

    def __get__(self, instance: Function[..., Any] | None, owner: type) -> Any:
        return self if instance is None else _RemoteFace(instance)


class Function(Generic[P, R]):
    """A function whose calls run on Fly Machines. Made by :func:`remote`.

    - ``fn.remote(*args, **kwargs)``: run on a machine, block, return the value.
    - ``await fn.remote.aio(*args, **kwargs)``: the same, awaited.
    - ``fn.spawn(*args, **kwargs)``: start a call, return a :class:`~flyjobs.Call` handle.
    - ``fn.map(*iterables)`` / ``fn.starmap(arg_tuples)``: one call per input, values yielded.
    - ``fn.local(*args, **kwargs)`` or ``fn(*args, **kwargs)``: run here, in this process.
    """

    __module__ = "flyjobs"

    def __init__(self, fn: Callable[P, R], options: CallOptions) -> None:
        self._fn = fn
        self.options = options
        if options.pool is not None:
            # Checked here, not in CallOptions: the calls import options, and only the
            # declaration layer may import Pool (whose start imports the pools' runner).
            if not isinstance(options.pool, Pool):
                raise ConfigError(
                    f"pool={options.pool!r}: give a flyjobs.Pool(min=, max=, idle_s=)"
                )
            options.pool._attach(fn, options)
        functools.update_wrapper(self, fn)

    #: Run one call on its own machine (``fn.remote(...)``, ``await fn.remote.aio(...)``).
    remote = _RemoteAttribute()
    #: One call per input, on a batch of machines (``fn.map(xs)``, ``fn.map.aio(xs)``).
    map = _MapAttribute()
    #: ``fn.map`` with each input a tuple of positional arguments (``fn.starmap(pairs)``).
    starmap = _StarmapAttribute()

    @overload
    def spawn(
        self: Function[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> Call[T]: ...

    @overload
    def spawn(self: Function[P, T], *args: P.args, **kwargs: P.kwargs) -> Call[T]: ...

    def spawn(self, *args: Any, **kwargs: Any) -> Call[Any]:
        """Start one call on its own machine and return its handle at once (the call of an
        ``async def`` function gives the awaited value).

        Arguments are encoded here, so one that cannot be sent raises
        :class:`~flyjobs.SerializationError` (a ``TypeError``) before any machine exists.

        :raises ConfigError: ``detach=`` is given and the function takes no such parameter
            (a call that outlives this process is `spawn_detached`).
        """
        from .._calls.dispatch import spawn  # lazy: keeps decoration light

        if "detach" in kwargs and not _takes_keyword(self._fn, "detach"):
            raise ConfigError(
                f"{self._fn.__qualname__}() takes no 'detach' argument: to start a call that"
                " outlives this process, use fn.spawn_detached(...)"
            )
        return spawn(self._fn, self.options, args, kwargs)

    @overload
    def spawn_detached(
        self: Function[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> Call[T]: ...

    @overload
    def spawn_detached(self: Function[P, T], *args: P.args, **kwargs: P.kwargs) -> Call[T]: ...

    def spawn_detached(self, *args: Any, **kwargs: Any) -> Call[Any]:
        """Start one call that outlives this process, and return its handle at once.

        When this process exits, the call's machine runs on to its own deadline and its result
        stays in the object store; ``flyjobs.Call.from_id(call.id)`` in any process gives it
        back (status, ``result(timeout_s)``, ``cancel()``). Needs the object store
        (``FLYJOBS_STORE``, ``FLYJOBS_RESULTS=store``) and Fly (not the embedded emulator).

        Returns once the machine exists and the call is recorded in the store (or the call
        failed), so the process may exit right away.

        :raises ConfigError: no store, or the embedded emulator.
        """
        from .._calls.dispatch import spawn  # lazy: keeps decoration light

        call = spawn(self._fn, self.options, args, kwargs, detach=True)
        call._wait_created()
        return call

    def with_options(self, **options: Unpack[Options]) -> Function[P, R]:
        """The same function with some options replaced, for ``.remote``, ``.spawn`` and
        ``.map`` (``fn.with_options(memory_mb=1024, timeout_s=600).map(xs)``); this one is
        unchanged.

        :raises ConfigError: an invalid or unknown option.
        """
        return Function(self._fn, self.options.replaced(**options))

    def _map(
        self,
        inputs: Iterable[Sequence[Any]],
        sources: Sequence[Iterable[Any]],
        *,
        order_outputs: bool,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> MapResults[Any]:
        from .._batches.map import results  # lazy: keeps decoration light

        run = self._start_map(
            inputs,
            sources,
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
            **settings,
        )
        return results(run, return_exceptions=return_exceptions)

    def _start_map(
        self,
        inputs: Iterable[Sequence[Any]],
        sources: Sequence[Iterable[Any]],
        *,
        order_outputs: bool,
        return_exceptions: bool,
        **settings: Unpack[MapSettings],
    ) -> _MapRun:
        """Start the map of ``inputs`` (argument tuples), made from the iterables ``sources``
        (which tell how many inputs there are: see `flyjobs._batches.map.input_count`)."""
        from .._batches.map import input_count, start_map  # lazy: keeps decoration light

        unknown = sorted(set(settings) - set(_MAP_SETTINGS))
        if unknown:
            # A call option here (timeout_s=, retries=...) would be silently ignored.
            raise ConfigError(
                f"fn.map/starmap got unknown setting(s) {', '.join(unknown)}; its settings are"
                f" {', '.join(_MAP_SETTINGS)}, order_outputs and return_exceptions. Call"
                " options go through with_options: fn.with_options(timeout_s=60).map(...)"
            )
        journal = None
        name = settings.get("batch")
        if name is not None:
            from .._batches.journal import check_batch_name  # lazy: keeps decoration light
            from .._batches.resume import open_resume  # lazy: keeps decoration light

            journal = open_resume(self._fn, self.options, check_batch_name(name))
        return start_map(
            self._fn,
            self.options,
            ((tuple(args), {}) for args in inputs),
            max_machines=settings.get("max_machines"),
            reuse=settings.get("reuse", True),
            max_failures=settings.get("max_failures"),
            progress=settings.get("progress"),
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
            journal=journal,
            output=settings.get("output"),
            total_hint=input_count(sources),
            max_cost_usd=settings.get("max_cost_usd"),
            standby=settings.get("standby"),
        )

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here, in this process, as a plain call."""
        return self._fn(*args, **kwargs)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        # A plain call runs locally: that is also how the worker on a machine runs it.
        return self._fn(*args, **kwargs)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        # Looked up on an instance, a decorated method would run remotely without its `self`
        # (which cannot travel), and fail there with a confusing TypeError.
        if instance is None:
            return self
        return _BoundMethod(self, instance)

    def __repr__(self) -> str:
        name = getattr(self._fn, "__qualname__", repr(self._fn))
        return f"<flyjobs.Function {self.__module__}.{name}>"


class _BoundMethod:
    """A `Function` looked up on an instance: runs locally; remote faces refuse clearly."""

    __slots__ = ("_function", "_instance")

    def __init__(self, function: Function[..., Any], instance: object) -> None:
        self._function = function
        self._instance = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function._fn(self._instance, *args, **kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the method here, in this process."""
        return self(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("remote", "spawn", "map", "starmap"):
            qualname = getattr(self._function._fn, "__qualname__", "the method")
            raise SerializationError(
                f"{qualname} is a method: its instance (self) cannot be sent to a machine, so"
                f" `instance.method.{name}(...)` cannot run remotely; make it a module-level"
                " function (or a @staticmethod) that takes the data it needs as arguments"
            )
        return getattr(self._function, name)


@overload
def remote(fn: Callable[P, T], /) -> Function[P, T]: ...


@overload
def remote(**options: Unpack[Options]) -> Callable[[Callable[P, T]], Function[P, T]]: ...


def remote(
    fn: Callable[P, T] | None = None, /, **options: Unpack[Options]
) -> Function[P, T] | Callable[[Callable[P, T]], Function[P, T]]:
    """Make a function whose calls each run on an ephemeral Fly Machine.

    Use bare (``@flyjobs.remote``) or with options (``@flyjobs.remote(memory_mb=512)``); the
    options are described on :class:`~flyjobs._declare.options.Options`. Unset options come from
    ``[tool.flyjobs]`` in pyproject.toml and the environment (``FLY_APP``, ``FLYJOBS_IMAGE``).

    With ``schedule=`` (``"hourly"``, ``"daily"``, ``"weekly"``, ``"monthly"`` or
    :class:`~flyjobs.Cron`) the function also runs on that schedule once
    ``flyjobs schedule deploy`` has deployed its module, with ``schedule_args`` and
    ``schedule_kwargs`` as its arguments; it can still be called as any remote function.

    :raises ConfigError: at decoration time for an invalid option (memory not a multiple of
        256, unknown cpus, size together with cpus/memory_mb, an unknown name, ...).
    """
    call_options = CallOptions(**options)

    def decorate(f: Callable[P, T]) -> Function[P, T]:
        return Function(f, call_options)

    return decorate(fn) if fn is not None else decorate


def _is_remote(exc: BaseException) -> bool:
    """`flyjobs._wire.remote_errors.is_remote`, imported only when a call failed."""
    from .._wire.remote_errors import is_remote  # lazy: keeps decoration light

    return is_remote(exc)


def _takes_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` accepts a keyword argument ``name`` (by name, or through ``**kwargs``)."""
    import inspect  # only on this rare path: machines import this module on every start

    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True  # unknown signature: pass the argument through
    return any(
        (p.name == name and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters
    )


def _check_iterables(iterables: tuple[Iterable[Any], ...]) -> None:
    """``fn.map`` takes one iterable per positional parameter, as built-in ``map`` does."""
    if not iterables:
        raise ConfigError(
            "fn.map() needs at least one iterable (one per parameter): fn.map(xs), or"
            " fn.map(xs, ys) for f(x, y); for a function of no arguments, fn.starmap([()] * n)"
        )
