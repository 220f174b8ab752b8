"""`Pool`: warm machines for a remote function's single calls (the FLAME pattern).

Declared in user modules (``@flyjobs.remote(pool=flyjobs.Pool(max=8))``), which every machine's
worker imports too: this module is standard library only and does nothing at construction.
The machines themselves are run by `flyjobs._pools.runner`, on the runtime's loop, from the pool's
start.
"""

from __future__ import annotations

import os

from .._exceptions import ConfigError
from .._wire.machine import MAX_WAIT_S
from .options import check_max_cost

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Self

__all__ = ("IDLE_CHOICES", "Pool")

#: What a pool's idle machine may do (``Pool(idle=...)``).
IDLE_CHOICES = ("exit", "suspend")


class Pool:
    """Warm machines that ``.remote``/``.spawn`` calls of a pooled function run on, instead of
    one machine per call.

    A call runs on a machine of the pool with a free slot (each machine runs up to
    ``max_concurrency`` calls at once) when there is one. Otherwise a new machine is created, up
    to ``max`` (at the Machines API's create rate), and the call runs on whichever slot is free
    first; beyond ``max``, calls queue. A machine that has had no call for ``idle_s`` seconds
    exits, down to ``min`` machines; with ``idle="suspend"`` it is suspended instead (see
    below). Pool machines are ephemeral like every flyjobs machine
    (``auto_destroy``, never restarted, metadata ``flyjobs_pool`` naming the pool), and pull
    their calls from this process over the result inbox: each delivered result is answered with
    that slot's next call. Every machine ends by itself at most ``idle_s`` plus
    `flyjobs._wire.machine.IDLE_EXIT_GRACE_S` seconds after its last call if this process
    disappears (a machine busy with a call ends when that call ends, or at its deadline).

    The pool starts with `start` (or ``with pool:`` / ``async with pool:``, which also shut it
    down), or else at its first call: it then starts ``min`` machines, which wait for calls. A
    web application would start it with the application (its lifespan), so that the first
    requests find warm machines.

    A call's ``timeout_s`` counts from the moment a slot takes it. A call whose machine dies
    is retried (within ``retries=``) on another machine, and the machine is replaced on demand.
    ``shutdown()``, and the interpreter's exit, destroy every machine of the pool.

    Isolation: calls on one machine run in the same worker process, one after another in each
    slot. Module state (globals, caches, imported modules, ``os.environ`` changes, the current
    directory), files written to the machine's disk and threads the function started persist
    from one call to the next; arguments, return values, captured output and the call's
    deadline do not. A function that must not see an earlier call's state should not use a pool.

    With ``max_concurrency`` above 1, calls also share the process while they run: sync
    functions run in threads of their own (module state they share needs locks, and CPU-bound
    Python code shares one core through the GIL); async functions run on one event loop,
    which persists between calls (an async function that blocks holds up the others). Each call
    keeps its own result, output tail (what a thread the function started prints goes to
    every running call's tail) and deadline: a call past its deadline fails with
    `~flyjobs.CallTimeoutError` and its machine takes no more calls, but the others on it run
    to their end; a machine that dies (a call that crashes the process kills it) has each of
    its running calls retried under ``retries=``. Signal handlers can be set only by the call
    that runs in the worker's main thread.

    Suspended machines (``idle="suspend"``): a machine idle for ``idle_s`` above ``min`` is
    suspended (Fly snapshots its memory; it costs only storage while suspended), and a call
    that finds no free slot resumes a suspended machine, in a few hundred milliseconds on
    Fly, before the pool creates one: its module state and imports are still there. Suspended
    machines count toward ``max``. Fly does not promise a warm resume: one that cold-boots
    starts a new worker process, and the pool then replaces that machine with a new one
    (its state is lost, and the call waits for a create). A suspended machine not resumed
    within a day is destroyed; `shutdown` destroys them, and ``flyjobs gc`` destroys those
    of a process that is gone. A suspended machine resumed past its wait ends by itself.

    :param min: machines started with the pool and kept up even when idle (one that dies
        after it has run a call is replaced).
    :param max: machines at once (the process's ``FLYJOBS_MAX_MACHINES`` bounds them as well).
    :param max_concurrency: calls one machine runs at once (FLAME's ``max_concurrency``).
    :param idle_s: seconds a machine waits for its next call before it exits (above ``min``).
    :param idle: what a machine idle for ``idle_s`` above ``min`` does: ``"exit"`` (it
        exits and is destroyed) or ``"suspend"`` (it is suspended, and resumed for a later
        call).
    :param name: the pool's name in machine metadata and ``flyjobs ls`` (lowercase letters,
        digits and dashes); default: a fresh ``fjp-…`` name.
    :param max_cost_usd: a cap in USD on what the pool's machines cost (see `ledger`): before
        a machine is created, or given another call (or a keep-warm wait), what they spent,
        what the running ones may still cost and what that would cost (up to the calls'
        ``timeout_s`` or ``idle_s``) must stay within it; else the calls that cannot run fail
        with `~flyjobs.BudgetExceededError`. None: no cap.
    :param standby: a machine the pool starts is first sought among free standby machines of
        its shape (``flyjobs standby create``), claimed under its lease and started by an
        update instead of created; when it ends it is stopped and given back (default:
        ``FLYJOBS_STANDBY`` or ``[tool.flyjobs] standby``, else False; never with
        ``idle="suspend"``).
    :raises ConfigError: an invalid setting (before any machine exists).
    """

    __module__ = "flyjobs"

    def __init__(
        self,
        # FLAME's names (min, max), which users of the pattern know, shadow builtins here.
        min: int = 0,
        max: int = 10,
        max_concurrency: int = 1,
        idle_s: float = 30.0,
        *,
        idle: str = "exit",
        name: str | None = None,
        max_cost_usd: float | None = None,
        standby: bool | None = None,
    ) -> None:
        if isinstance(max, bool) or not isinstance(max, int) or max < 1:
            raise ConfigError(f"Pool(max={max!r}): a pool needs at least one machine (max >= 1)")
        if isinstance(min, bool) or not isinstance(min, int) or not 0 <= min <= max:
            raise ConfigError(f"Pool(min={min!r}, max={max!r}): min must be from 0 to max")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise ConfigError(
                f"Pool(max_concurrency={max_concurrency!r}): give the number of calls one"
                " machine runs at once (an int >= 1)"
            )
        if max_concurrency < 1:
            raise ConfigError(
                f"Pool(max_concurrency={max_concurrency!r}): a machine runs at least one call"
                " at a time (max_concurrency >= 1)"
            )
        if (
            isinstance(idle_s, bool)
            or not isinstance(idle_s, (int, float))
            or not 0 < idle_s <= MAX_WAIT_S
        ):
            raise ConfigError(
                f"Pool(idle_s={idle_s!r}): must be a positive number of seconds, at most"
                f" {MAX_WAIT_S:g} (30 days)"
            )
        if idle not in IDLE_CHOICES:
            raise ConfigError(
                f'Pool(idle={idle!r}): give idle="exit" (an idle machine exits) or'
                ' idle="suspend" (it is suspended, and resumed for a later call)'
            )
        if standby is not None and not isinstance(standby, bool):
            raise ConfigError(f"Pool(standby={standby!r}): give True, False, or None (the setting)")
        if standby and idle == "suspend":
            raise ConfigError(
                'Pool(idle="suspend", standby=True): a pool whose idle machines suspend keeps'
                " them itself; give one of the two"
            )
        if name is None:
            name = "fjp-" + os.urandom(4).hex()
        allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
        if not name or not set(name) <= allowed:
            raise ConfigError(
                f"Pool(name={name!r}): use lowercase letters, digits and dashes (it names machines)"
            )
        self.min = min
        self.max = max
        self.max_concurrency = max_concurrency
        self.idle_s = float(idle_s)
        #: what an idle machine does: "exit" or "suspend"
        self.idle = idle
        self.name = name
        self.max_cost_usd = check_max_cost(max_cost_usd, "Pool(max_cost_usd={!r})")
        self.standby = standby
        #: the pool's machinery on the runtime's loop (a `flyjobs._pools.runner.PoolRunner`),
        #: from its start on
        self._runner: object | None = None
        #: (function, options) of the first function given this pool: whose machine options
        #: `start` creates machines with
        self._attached: tuple[Callable[..., Any], Any] | None = None

    def _attach(self, fn: Callable[..., Any], options: object) -> None:
        """``fn`` runs its calls on this pool (with ``options``, a `CallOptions`)."""
        if self._attached is None:
            self._attached = (fn, options)

    def start(self) -> None:
        """Start the pool: create its ``min`` machines and return once each is up and waiting
        for calls (at once when ``min`` is 0). They take the machine options of the first
        function given this pool. Calling it again, or after the first call, starts only the
        machines missing to ``min``.

        :raises ConfigError: no function has this pool yet (and ``min`` > 0), or a setting the
            machines need is missing.
        :raises FlyjobsError: a machine could not be started (the API's error).
        """
        from .._pools.runner import start_pool  # lazy: keeps decoration light

        start_pool(self)

    async def start_async(self) -> None:
        """`start` for async code (it runs in a worker thread)."""
        import anyio  # lazy: keeps decoration light

        await anyio.to_thread.run_sync(self.start)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    async def __aenter__(self) -> Self:
        await self.start_async()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown_async()

    def shutdown(self) -> None:
        """Destroy every machine of the pool and fail its queued calls
        (`~flyjobs.CallCancelledError`); returns once the machines are gone. The pool can be
        used again afterwards (it starts new machines)."""
        from .._pools.runner import shutdown_pool  # lazy: keeps decoration light

        shutdown_pool(self)

    async def shutdown_async(self) -> None:
        """`shutdown` for async code (it runs in a worker thread)."""
        import anyio  # lazy: keeps decoration light

        await anyio.to_thread.run_sync(self.shutdown)

    def ledger(self) -> dict[str, float]:
        """What the pool's machines have cost since it (last) started: ``machines`` (created),
        ``cost_usd`` (USD, each machine billed from its own start and exit events once it has
        exited, so far while it runs), ``busy_s`` (machine-seconds calls held a slot),
        ``idle_s`` (the rest of their billed machine-seconds: booting, waiting for a call,
        keep-warm), ``wasted_usd`` (USD of attempts that failed)."""
        from .._pools.runner import pool_ledger  # lazy: keeps decoration light

        return pool_ledger(self)

    def __repr__(self) -> str:
        idle = "" if self.idle == "exit" else f" idle={self.idle!r},"
        return (
            f"Pool(min={self.min}, max={self.max}, max_concurrency={self.max_concurrency},"
            f" idle_s={self.idle_s:g},{idle} name={self.name!r})"
        )
