"""Endpoints of a machine's metadata (``/machines/{id}/metadata[/{key}]``)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from ._core import ClientCore, quote_segment, without_none
from ._http import parse_json, parse_none

__all__ = ("MetadataAPI",)


class MetadataAPI(ClientCore):
    """Machine metadata: string keys and values that do not create a new machine version."""

    async def get_metadata(self, app: str, machine_id: str) -> dict[str, str]:
        """All metadata of the machine."""
        call = self._machine_call("GET", app, machine_id, "/metadata", "get_metadata")
        return await self._requester.call(call, _parse_metadata)

    async def get_metadata_value(self, app: str, machine_id: str, key: str) -> str:
        """The value of one key. :raises NotFoundError: no such key."""
        suffix = f"/metadata/{quote_segment(key)}"
        call = self._machine_call("GET", app, machine_id, suffix, "get_metadata")
        return await self._requester.call(call, _parse_value)

    async def set_metadata_value(
        self, app: str, machine_id: str, key: str, value: str, *, nonce: str | None = None
    ) -> None:
        """Set one key."""
        suffix = f"/metadata/{quote_segment(key)}"
        call = self._machine_call(
            "POST", app, machine_id, suffix, "set_metadata", json={"value": value}, nonce=nonce
        )
        await self._requester.call(call, parse_none)

    async def delete_metadata_value(
        self, app: str, machine_id: str, key: str, *, nonce: str | None = None
    ) -> None:
        """Remove one key."""
        suffix = f"/metadata/{quote_segment(key)}"
        call = self._machine_call("DELETE", app, machine_id, suffix, "delete_metadata", nonce=nonce)
        await self._requester.call(call, parse_none)

    async def update_metadata(
        self,
        app: str,
        machine_id: str,
        changes: Mapping[str, str | None],
        *,
        machine_version: str | None = None,
        nonce: str | None = None,
    ) -> None:
        """Set several keys at once; a ``None`` (or empty) value removes its key, and keys not
        in ``changes`` are left alone.

        :raises PreconditionFailedError: the machine is no longer at ``machine_version``.
        """
        body = without_none(metadata=dict(changes), machine_version=machine_version)
        call = self._machine_call(
            "PATCH", app, machine_id, "/metadata", "set_metadata", json=body, nonce=nonce
        )
        await self._requester.call(call, parse_none)


def _parse_metadata(response: httpx.Response) -> dict[str, str]:
    body = parse_json(response) or {}
    if not isinstance(body, dict):
        raise ValueError("metadata is not a JSON object")
    return {str(key): str(value) for key, value in body.items()}


def _parse_value(response: httpx.Response) -> str:
    body = parse_json(response)
    if not isinstance(body, dict) or not isinstance(body.get("value"), str):
        raise ValueError("the answer has no string 'value'")
    return str(body["value"])
