"""Endpoints of a machine's lifecycle: create, get, list, update, delete."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

import anyio
import anyio.lowlevel
import httpx

from .._exceptions import FlyjobsError, NotFoundError
from ._config_models import MachineConfig
from ._core import ClientCore, app_path, params, without_none
from ._http import ApiRequest, may_have_reached_server, parse_list, parse_model, parse_none
from ._response_models import Machine

__all__ = ("MachinesAPI",)

log = logging.getLogger("flyjobs.machines")

#: Longest time spent, shielded from cancellation, destroying what a failed create left.
CLEANUP_TIMEOUT_S: Final = 15.0
#: Seconds a create's answer is awaited. Fly may take over 30 s to make a machine (a cold image
#: pull, a capacity search), and a create given up on is still made: asking again meanwhile
#: finds nothing by its name yet, and a create that fails while the first is still being made
#: leaves that machine running for nobody. Fly's own deadline ends a request well before this.
CREATE_READ_TIMEOUT_S: Final = 150.0


class MachinesAPI(ClientCore):
    """Creating, reading, updating and destroying machines."""

    async def create_machine(
        self,
        app: str,
        config: MachineConfig,
        *,
        name: str | None = None,
        region: str | None = None,
        skip_launch: bool = False,
        lease_ttl_s: int | None = None,
        skip_service_registration: bool = False,
        min_secrets_version: int | None = None,
    ) -> Machine:
        """Create (and, unless ``skip_launch``, start) a machine.

        The request always carries a name (``flyjobs-<random>`` when none is given): it is how
        a create whose answer was lost is found instead of being made twice. A slow create is
        waited for (up to ``CREATE_READ_TIMEOUT_S``, whatever the client's ``timeout_s``)
        rather than asked again while it may still be made. If the call fails
        in a way that may have left a machine behind, or is cancelled, that machine is looked
        up and destroyed before the error propagates: a create either returns the machine or
        leaves none.

        :param lease_ttl_s: create the machine holding a lease of this many seconds; its nonce
            is in the returned ``Machine.nonce``.
        """
        name = name or f"flyjobs-{secrets.token_hex(6)}"
        body = without_none(
            name=name,
            config=config.to_api(),
            region=region,
            skip_launch=skip_launch or None,
            lease_ttl=lease_ttl_s,
            skip_service_registration=skip_service_registration or None,
            min_secrets_version=min_secrets_version,
        )
        call = ApiRequest(
            "POST",
            f"{app_path(app)}/machines",
            "create_machine",
            app,
            False,
            json=body,
            read_timeout_s=CREATE_READ_TIMEOUT_S,
        )
        recover = partial(self._find_machine, app, name, include_deleted=True)
        try:
            machine = await self._requester.call(call, parse_model(Machine), recover=recover)
            # The request is seen through even if the caller is cancelled meanwhile (see
            # Requester); a caller cancelled by now gets no machine, so it is destroyed below.
            await anyio.lowlevel.checkpoint()
            return machine
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()) or may_have_reached_server(exc):
                await self._destroy_orphan(app, name)
            raise

    async def get_machine(
        self,
        app: str,
        machine_id: str,
        *,
        version: str | None = None,
        include_leases: bool = False,
    ) -> Machine:
        """The machine as it is now (or as it was at ``version``).

        A destroyed machine stays readable, in state ``destroyed``, for a while; then this
        raises `NotFoundError`.
        """
        query = params(version=version, include_leases=include_leases)
        call = self._machine_call("GET", app, machine_id, "", "get_machine", query=query)
        return await self._requester.call(call, parse_model(Machine))

    async def list_machines(
        self,
        app: str,
        *,
        include_deleted: bool = False,
        region: str | None = None,
        state: str | Iterable[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        summary: bool = False,
    ) -> list[Machine]:
        """The app's machines (all pages), filtered by region, state(s) and metadata values.

        :param include_deleted: include recently destroyed machines (while Fly retains them).
        :param summary: ask Fly to leave the bulky parts of each config out.
        """
        states = [state] if isinstance(state, str) else list(state or ())
        query = params(
            include_deleted=include_deleted,
            region=region,
            state=",".join(states) or None,
            summary=summary,
        )
        query += [(f"metadata.{key}", value) for key, value in (metadata or {}).items()]
        path = f"{app_path(app)}/machines"
        machines: list[Machine] = []
        page_query = query
        while True:
            call = ApiRequest("GET", path, "list_machines", app, safe=True, params=page_query)
            page, cursor = await self._requester.call(call, _parse_machine_page)
            machines += page
            if not cursor:
                return machines
            page_query = [*query, ("cursor", cursor)]

    async def update_machine(
        self,
        app: str,
        machine_id: str,
        config: MachineConfig,
        *,
        current_version: str | None = None,
        skip_launch: bool = False,
        min_secrets_version: int | None = None,
        nonce: str | None = None,
    ) -> Machine:
        """Replace the machine's whole config (Fly has no partial update); a running machine
        restarts with it unless ``skip_launch``. Name and region cannot change.

        Not repeated after an unknown outcome (it would restart the machine twice).

        :param current_version: apply only if the machine is still at this ``version``.
        :raises ConflictError: ``current_version`` is stale, or (`LeaseHeldError`) another
            holder's lease is live.
        """
        body = without_none(
            config=config.to_api(),
            current_version=current_version,
            skip_launch=skip_launch or None,
            min_secrets_version=min_secrets_version,
        )
        call = self._machine_call(
            "POST", app, machine_id, "", "update_machine", safe=False, json=body, nonce=nonce
        )
        return await self._requester.call(call, parse_model(Machine))

    async def delete_machine(
        self, app: str, machine_id: str, *, force: bool = False, nonce: str | None = None
    ) -> None:
        """Destroy the machine for good; ``force`` kills it first if it is running."""
        call = self._machine_call(
            "DELETE", app, machine_id, "", "delete_machine", query=params(force=force), nonce=nonce
        )
        await self._requester.call(call, parse_none)

    @asynccontextmanager
    async def temporary_machine(
        self,
        app: str,
        config: MachineConfig,
        *,
        name: str | None = None,
        region: str | None = None,
    ) -> AsyncIterator[Machine]:
        """Create a machine for the length of an ``async with`` block and destroy it (forced,
        shielded from cancellation) when the block ends, however it ends."""
        machine = await self.create_machine(app, config, name=name, region=region)
        try:
            yield machine
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT_S):
                try:
                    await self.delete_machine(app, machine.id, force=True)
                except NotFoundError:
                    pass

    async def _find_machine(self, app: str, name: str, *, include_deleted: bool) -> Machine | None:
        """The machine named ``name``, preferring a live one, then the newest."""
        machines = await self.list_machines(app, include_deleted=include_deleted)
        matches = [m for m in machines if m.name == name]
        if not matches:
            return None
        return max(
            matches,
            key=lambda m: (m.state != "destroyed", m.created_at.timestamp() if m.created_at else 0),
        )

    async def _destroy_orphan(self, app: str, name: str) -> None:
        """Destroy the machine ``name`` if a failed or cancelled create made it after all."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT_S):
            try:
                machine = await self._find_machine(app, name, include_deleted=False)
                if machine is not None and machine.state != "destroyed":
                    await self.delete_machine(app, machine.id, force=True)
                    log.info("destroyed machine %s (%s) left by a failed create", machine.id, name)
                return
            except NotFoundError:
                return  # destroyed between the look-up and the delete: nothing is left
            except FlyjobsError as exc:
                log.warning(
                    "could not look for machine %r in app %r after a failed create (one may be"
                    " left): %s",
                    name,
                    app,
                    exc,
                )
                return
        log.warning("a failed create may have left a machine named %r in app %r", name, app)


def _parse_machine_page(response: httpx.Response) -> tuple[list[Machine], str | None]:
    return parse_list(Machine)(response), response.headers.get("fly-next-cursor") or None
