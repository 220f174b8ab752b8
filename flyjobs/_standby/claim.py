"""Claiming standby machines for a batch, giving them back, and recovering those of dead callers.

A batch claims free standbys of its shape (`claim_standbys`) each under its own lease (so two
batches never take the same machine: the second's lease request is refused 409), refreshed in
the background every third of `LEASE_TTL_S`. Each claimed standby is then started with the
batch's call (`flyjobs._calls.attempt.MachineRun.start_claimed`) and, however the batch ends,
given back (`Claim.give_back`): stopped if it runs, its resting config restored, its lease
released. A caller that dies stops refreshing: its leases expire within `LEASE_TTL_S`, and
``flyjobs gc`` (`recover_standbys`) stops and resets every standby left out of rest without a
live lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from .._calls.machine_config import standby_config, standby_metadata
from .._declare.options import CallOptions
from .._exceptions import APIError, ConflictError, FlyjobsError, NotFoundError, TransportError
from .._wire.metadata import META_STANDBY, META_STANDBY_IMAGE
from ..machines import MachinesClient, patient_until
from .fleet import AT_REST, Standby, list_standbys, standby_of

__all__ = ("LEASE_TTL_S", "Claim", "claim_standbys", "recover_standbys")

logger = logging.getLogger("flyjobs.standby")

#: Seconds a claim's lease lives without a refresh: how long a dead caller's standby stays
#: claimed before ``flyjobs gc`` may recover it.
LEASE_TTL_S = 30
#: The metadata a standby keeps at rest.
_MARKS = (META_STANDBY, META_STANDBY_IMAGE)
#: Seconds giving a standby back may take (stop, reset, release) before it is left to gc.
_GIVE_BACK_TIMEOUT_S = 60.0


class Claim:
    """A standby machine held under its lease; implements `flyjobs._calls.attempt.StandbyClaim`.

    :ivar machine_id: the standby's id.
    :ivar nonce: its lease's nonce (sent with every change to the machine).
    """

    def __init__(
        self,
        client: MachinesClient,
        app: str,
        machine_id: str,
        nonce: str,
        options: CallOptions,
        image: str,
        *,
        ttl_s: int = LEASE_TTL_S,
    ) -> None:
        self.machine_id = machine_id
        self.nonce = nonce
        self._client = client
        self._app = app
        self._options = options
        self._image = image
        self._ttl_s = ttl_s
        self._scope = anyio.CancelScope()
        self._given_back = False

    def __repr__(self) -> str:
        return f"Claim({self._app!r}, {self.machine_id!r})"  # never the nonce

    async def keep(self) -> None:
        """Refresh the lease every third of its TTL until `give_back` (never raises)."""
        with self._scope:
            while True:
                await anyio.sleep(max(0.5, self._ttl_s / 3))
                try:
                    lease = await self._client.refresh_lease(
                        self._app, self.machine_id, self.nonce, ttl_s=self._ttl_s
                    )
                except FlyjobsError as exc:
                    logger.warning("lease on standby %s not refreshed: %s", self.machine_id, exc)
                    continue
                self.nonce = lease.nonce or self.nonce

    async def give_back(self) -> None:
        """Stop the standby (if it runs), restore its resting config, release its lease
        (once; shielded; bounded in time). A failure is logged: the lease then expires by
        itself and ``flyjobs gc`` finishes the job."""
        await self._end(reset=True)

    async def release(self) -> None:
        """Give back a claim that was never started: only its lease is released (nothing when
        it was given back already)."""
        await self._end(reset=False)

    async def _end(self, *, reset: bool) -> None:
        """Stop refreshing the lease, `_reset` the standby when ``reset``, release the lease:
        once, shielded, bounded in time, failures logged."""
        if self._given_back:
            return
        self._given_back = True
        self._scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_GIVE_BACK_TIMEOUT_S):
            if reset:
                try:
                    await self._reset()
                except (APIError, TransportError) as exc:
                    logger.error("standby %s not reset (flyjobs gc will): %s", self.machine_id, exc)
            try:
                await self._client.release_lease(self._app, self.machine_id, self.nonce)
            except NotFoundError:
                pass  # expired already, or the machine is gone
            except (APIError, TransportError) as exc:
                logger.warning("lease on standby %s not released: %s", self.machine_id, exc)

    async def _reset(self) -> None:
        """One update to its resting config without a launch (the emulator also stops a
        machine still running then); one the answer shows still running (Fly documents only
        that ``skip_launch`` does not restart it) is then stopped (`rest`)."""
        config = standby_config(self._options, image=self._image)
        machine = await self._client.update_machine(
            self._app, self.machine_id, config, skip_launch=True, nonce=self.nonce
        )
        if machine.state not in AT_REST:
            await rest(self._client, self._app, self.machine_id, self.nonce)


async def rest(client: MachinesClient, app: str, machine_id: str, nonce: str) -> None:
    """Put a standby back at rest under the lease ``nonce``: stop it if it runs, wait until it
    has, and restore its resting config (image and guest kept, no call, not booted)."""
    machine = await client.get_machine(app, machine_id)
    if machine.state not in AT_REST:
        await client.stop_machine(app, machine_id, nonce=nonce)
        await client.wait(app, machine_id, ("stopped", "failed", "destroyed"), timeout_s=60.0)
        machine = await client.get_machine(app, machine_id)
    if machine.state == "destroyed" or machine.config is None:
        return
    metadata = machine.config.metadata or {}
    resting = {key: metadata[key] for key in _MARKS if key in metadata}
    if resting == metadata and not machine.config.files:
        return  # its config is the resting one already
    config = machine.config.model_copy(update={"env": {}, "files": None, "metadata": resting})
    await client.update_machine(app, machine_id, config, skip_launch=True, nonce=nonce)


async def claim_standbys(
    client: MachinesClient,
    app: str,
    options: CallOptions,
    *,
    image: str,
    want: int,
    description: str,
    on_claim: Callable[[Claim], None] | None = None,
) -> list[Claim]:
    """Take up to ``want`` free standbys of ``options``' shape and ``image`` (and region, when
    ``options`` names one), each under a fresh lease; a standby another caller leased first is
    skipped. Their leases are not refreshed yet: start `Claim.keep` for each. ``on_claim`` is
    given each claim as soon as its lease is held (the leases are asked for all at once).

    Finding none is not an error (the batch creates machines instead); neither is an API
    failure, which is logged.
    """
    marks = standby_metadata(options, image)
    try:
        machines = await client.list_machines(app, state=list(AT_REST), metadata=marks)
    except (APIError, TransportError) as exc:
        logger.warning("standbys not listed, creating machines instead: %s", exc)
        return []
    free = [
        s.id
        for m in machines
        if (s := standby_of(m)) is not None
        and s.at_rest
        and (options.region is None or s.region == options.region)
    ]
    claims: list[Claim] = []
    while free and len(claims) < want:
        batch, free = free[: want - len(claims)], free[want - len(claims) :]
        found: list[Claim] = []

        async def take(machine_id: str, found: list[Claim] = found) -> None:
            claim = await _lease(client, app, machine_id, options, image, description)
            if claim is not None:
                found.append(claim)
                if on_claim is not None:
                    on_claim(claim)

        async with anyio.create_task_group() as tg:
            for machine_id in batch:
                tg.start_soon(take, machine_id)
        claims += found
    return claims


async def _lease(
    client: MachinesClient,
    app: str,
    machine_id: str,
    options: CallOptions,
    image: str,
    description: str,
) -> Claim | None:
    """A claim on ``machine_id`` if its lease is free."""
    try:
        with patient_until(anyio.current_time() + LEASE_TTL_S):
            lease = await client.acquire_lease(
                app, machine_id, ttl_s=LEASE_TTL_S, description=description
            )
    except (ConflictError, NotFoundError):
        return None  # another caller's, or gone
    except (APIError, TransportError) as exc:
        logger.warning("standby %s not leased: %s", machine_id, exc)
        return None
    assert lease.nonce is not None  # acquire_lease refuses an answer without one
    # Not read again once leased: a standby another caller claimed after the listing is
    # given back at rest before its lease is released, and one a dead caller left running
    # (its lease expired) is taken over by the update that starts it.
    return Claim(client, app, machine_id, lease.nonce, options, image, ttl_s=LEASE_TTL_S)


async def recover_standbys(
    client: MachinesClient, app: str, *, dry_run: bool = False
) -> list[tuple[Standby, str]]:
    """Put back at rest every standby a caller left out of rest and no longer holds (no live
    lease: its caller died, or gave up): stopped, resting config restored. Return each
    (standby, what was done). A standby under a live lease is in use and left alone."""
    recovered: list[tuple[Standby, str]] = []
    for standby in await list_standbys(client, app):
        if standby.at_rest:
            continue
        try:
            lease = await client.acquire_lease(
                app, standby.id, ttl_s=LEASE_TTL_S, description="flyjobs gc"
            )
        except ConflictError:
            continue  # its caller still holds it
        except NotFoundError:
            continue
        assert lease.nonce is not None
        try:
            if not dry_run:
                await rest(client, app, standby.id, lease.nonce)
            recovered.append((standby, f"{standby.state}, no lease held: stopped and reset"))
        finally:
            try:
                await client.release_lease(app, standby.id, lease.nonce)
            except NotFoundError:
                pass
    return recovered
