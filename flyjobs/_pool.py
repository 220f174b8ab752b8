"""`Pool`: warm machines for a remote function's single calls (the FLAME pattern).

Declared in user modules (``@flyjobs.remote(pool=flyjobs.Pool(max=8))``), which every machine's
worker imports too: this module is standard library only and does nothing at construction.
The machines themselves are run by `flyjobs._warm`, on the runtime's loop, from the first call.
"""

from __future__ import annotations

import os

from ._exceptions import ConfigError

__all__ = ("Pool",)


class Pool:
    """Warm machines that ``.remote``/``.spawn`` calls of a pooled function run on, instead of
    one machine per call.

    A call runs on an idle machine of the pool when there is one. Otherwise a new machine is
    created, up to ``max`` (at the Machines API's create rate), and the call runs on whichever
    machine is free first; beyond ``max``, calls queue. A machine that has had no call for
    ``idle_s`` seconds exits, down to ``min`` machines. Pool machines are ephemeral like every
    flyjobs machine (``auto_destroy``, never restarted, metadata ``flyjobs_pool`` naming the
    pool), and pull their calls from this process over the result inbox: each delivered result
    is answered with the machine's next call. Every machine ends by itself at most ``idle_s``
    plus `flyjobs._protocol.IDLE_EXIT_GRACE_S` seconds after its last call if this process
    disappears (a machine busy with a call ends when that call ends, or at its deadline).

    A call's ``timeout_s`` counts from the moment a machine takes it. A call whose machine dies
    is retried (within ``retries=``) on another machine, and the machine is replaced on demand.
    ``shutdown()``, and the interpreter's exit, destroy every machine of the pool.

    Isolation: calls on one machine run one after another in the same worker process. Module
    state (globals, caches, imported modules, ``os.environ`` changes, the current directory),
    files written to the machine's disk and threads the function started persist from one call
    to the next; arguments, return values, captured output and the call's deadline do not. A
    function that must not see an earlier call's state should not use a pool.

    :param min: machines kept up even when idle, once started (they are not started before
        the first calls).
    :param max: machines at once (the process's ``FLYJOBS_MAX_MACHINES`` bounds them as well).
    :param max_concurrency: calls a machine runs at once; only 1 is supported.
    :param idle_s: seconds a machine waits for its next call before it exits (above ``min``).
    :param name: the pool's name in machine metadata and ``flyjobs ls`` (lowercase letters,
        digits and dashes); default: a fresh ``fjp-…`` name.
    :raises ConfigError: an invalid setting (before any machine exists).
    """

    def __init__(
        self,
        # FLAME's names (min, max), which users of the pattern know, shadow builtins here.
        min: int = 0,
        max: int = 10,
        max_concurrency: int = 1,
        idle_s: float = 30.0,
        *,
        name: str | None = None,
    ) -> None:
        if not isinstance(max, int) or max < 1:
            raise ConfigError(f"Pool(max={max!r}): a pool needs at least one machine (max >= 1)")
        if not isinstance(min, int) or not 0 <= min <= max:
            raise ConfigError(f"Pool(min={min!r}, max={max!r}): min must be from 0 to max")
        if max_concurrency != 1:
            raise ConfigError(
                f"Pool(max_concurrency={max_concurrency!r}): a pool machine runs one call at a"
                " time; raise max= for more calls at once"
            )
        if isinstance(idle_s, bool) or not isinstance(idle_s, (int, float)) or not idle_s > 0:
            raise ConfigError(f"Pool(idle_s={idle_s!r}): must be a positive number of seconds")
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
        self.name = name
        #: the pool's machinery on the runtime's loop (a `flyjobs._warm.PoolRunner`), from the
        #: first call on
        self._runner: object | None = None

    def shutdown(self) -> None:
        """Destroy every machine of the pool and fail its queued calls
        (`~flyjobs.CallCancelledError`); returns once the machines are gone. The pool can be
        used again afterwards (it starts new machines)."""
        from ._warm import shutdown_pool

        shutdown_pool(self)

    async def shutdown_async(self) -> None:
        """`shutdown` for async code (it runs in a worker thread)."""
        import anyio

        await anyio.to_thread.run_sync(self.shutdown)

    def __repr__(self) -> str:
        return (
            f"Pool(min={self.min}, max={self.max}, max_concurrency={self.max_concurrency},"
            f" idle_s={self.idle_s:g}, name={self.name!r})"
        )
