"""Machine leases: the endpoints, and holding one for the length of an ``async with`` block.

While a `LeaseScope` block runs, a task in the block's own task group refreshes the lease every
third of its TTL (at most twice a second); on exit the task is cancelled and the lease released
(shielded from cancellation, bounded in time), however the block ends. How calls inside the
block pick up the nonce is described in `_held`.
"""

from __future__ import annotations

import logging
import secrets
from contextvars import Token
from functools import partial
from types import TracebackType
from typing import Final

import anyio
import httpx
from anyio.abc import TaskGroup

from .._exceptions import ConflictError, FlyjobsError, NotFoundError
from ._core import ClientCore
from ._held import Held, HeldLease, hold, unhold
from ._http import parse_model, parse_none
from ._response_models import Lease

__all__ = ("LeaseScope", "LeasesAPI")

log = logging.getLogger("flyjobs.machines")

#: Shortest interval between refreshes of a held lease, in seconds.
MIN_REFRESH_S: Final = 0.5
#: Longest time spent releasing a lease on exit; after that it expires by itself.
RELEASE_TIMEOUT_S: Final = 10.0


class LeasesAPI(ClientCore):
    """Machine leases: exclusive rights to change a machine."""

    def lease(
        self,
        app: str,
        machine_id: str,
        *,
        ttl_s: int = 30,
        description: str | None = None,
    ) -> LeaseScope:
        """Hold a lease on the machine for the length of an ``async with`` block.

        ``async with fly.lease(app, machine_id) as held:`` acquires it, refreshes it in the
        background every ``ttl_s / 3`` seconds (0.5 s at least) and releases it on exit.
        Inside the block, every call of this client for that machine (from this task, or tasks
        it starts) sends the lease nonce by itself; other clients do not.

        :raises LeaseHeldError: (on entry) someone else holds a live lease.
        """
        return LeaseScope(self, app, machine_id, ttl_s=ttl_s, description=description)

    async def acquire_lease(
        self,
        app: str,
        machine_id: str,
        *,
        ttl_s: int = 30,
        description: str | None = None,
    ) -> Lease:
        """Acquire a lease of ``ttl_s`` seconds. Pass its ``nonce`` to later calls, refresh and
        release it yourself, or use `lease`, which does all that.

        The description gets a random ``[tag]`` appended: it is how an acquisition whose answer
        was lost is recognised (by reading the lease back) instead of failing with 409.

        :raises LeaseHeldError: someone else holds a live lease.
        """
        full_description = f"{description or 'flyjobs'} [{secrets.token_hex(6)}]"
        body = {"ttl": ttl_s, "description": full_description}
        call = self._machine_call(
            "POST",
            app,
            machine_id,
            "/lease",
            "acquire_lease",
            safe=False,
            json=body,
            with_held_nonce=False,
        )
        recover = partial(self._find_own_lease, app, machine_id, full_description)
        return await self._requester.call(call, _parse_acquired, recover=recover)

    async def refresh_lease(
        self, app: str, machine_id: str, nonce: str, *, ttl_s: int = 30
    ) -> Lease:
        """Extend the lease ``nonce`` to ``ttl_s`` seconds from now."""
        call = self._machine_call(
            "POST", app, machine_id, "/lease", "refresh_lease", json={"ttl": ttl_s}, nonce=nonce
        )
        return await self._requester.call(call, parse_model(Lease))

    async def release_lease(self, app: str, machine_id: str, nonce: str) -> None:
        """Release the lease ``nonce``."""
        call = self._machine_call("DELETE", app, machine_id, "/lease", "release_lease", nonce=nonce)
        await self._requester.call(call, parse_none)

    async def get_lease(self, app: str, machine_id: str) -> Lease:
        """The machine's current lease (its nonce included, as Fly shows it to its owner).

        :raises NotFoundError: there is none.
        """
        call = self._machine_call("GET", app, machine_id, "/lease", "get_lease")
        return await self._requester.call(call, parse_model(Lease))

    async def _find_own_lease(self, app: str, machine_id: str, description: str) -> Lease | None:
        try:
            lease = await self.get_lease(app, machine_id)
        except NotFoundError:
            return None
        return lease if lease.description == description and lease.nonce else None


class LeaseScope:
    """The async context manager returned by `MachinesClient.lease`; yields a `HeldLease`."""

    def __init__(
        self,
        client: LeasesAPI,
        app: str,
        machine_id: str,
        *,
        ttl_s: int,
        description: str | None,
    ) -> None:
        self._client = client
        self._app = app
        self._machine_id = machine_id
        self._ttl_s = ttl_s
        self._description = description
        self._held: HeldLease | None = None
        self._token: Token[Held] | None = None
        self._tasks: TaskGroup | None = None

    async def __aenter__(self) -> HeldLease:
        lease = await self._client.acquire_lease(
            self._app, self._machine_id, ttl_s=self._ttl_s, description=self._description
        )
        assert lease.nonce is not None  # acquire_lease rejects an answer without one
        held = self._held = HeldLease(
            self._app, self._machine_id, lease.nonce, lease.expires_at, lease
        )
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._keep_alive, held)
        self._token = hold(self._client, held)
        return held

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._held is not None and self._tasks is not None and self._token is not None
        unhold(self._token)
        try:
            # The refresher never raises, so the group ends cleanly and the block's own
            # exception, if any, propagates as it is (not wrapped in an ExceptionGroup).
            self._tasks.cancel_scope.cancel()
            await self._tasks.__aexit__(None, None, None)
        finally:
            # Also when the block was cancelled from outside (the group's exit re-raises that).
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT_S):
                await self._release(self._held)

    async def _keep_alive(self, held: HeldLease) -> None:
        interval_s = max(MIN_REFRESH_S, self._ttl_s / 3)
        while True:
            await anyio.sleep(interval_s)
            try:
                lease = await self._client.refresh_lease(
                    held.app, held.machine_id, held.nonce, ttl_s=self._ttl_s
                )
            except (NotFoundError, ConflictError) as exc:
                held.lost = True
                log.warning("lease on machine %s lost: %s", held.machine_id, exc)
                return
            except FlyjobsError as exc:
                log.warning("lease refresh on machine %s failed: %s", held.machine_id, exc)
                continue
            held.nonce = lease.nonce or held.nonce
            held.expires_at = lease.expires_at
            held.lease = lease

    async def _release(self, held: HeldLease) -> None:
        try:
            await self._client.release_lease(held.app, held.machine_id, held.nonce)
        except NotFoundError:
            pass  # the machine, or its lease, is already gone
        except FlyjobsError as exc:
            log.warning(
                "could not release the lease on machine %s (it expires by itself): %s",
                held.machine_id,
                exc,
            )


def _parse_acquired(response: httpx.Response) -> Lease:
    lease = parse_model(Lease)(response)
    if not lease.nonce:
        raise ValueError("the lease answer carries no nonce")
    return lease
