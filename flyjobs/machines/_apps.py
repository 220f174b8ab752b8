"""Endpoints of apps and app secrets (``/v1/apps[/{app}[/secrets[/{name}]]]``)."""

from __future__ import annotations

import secrets
from functools import partial

import httpx
from pydantic import SecretStr, TypeAdapter

from .._exceptions import NotFoundError
from ._core import ClientCore, app_path, params, quote_segment, without_none
from ._http import ApiRequest, parse_json, parse_model, parse_none
from ._response_models import App, AppSecret, AppsPage
from ._validation import SERVER_CONTEXT

__all__ = ("AppsAPI",)

_SECRETS: TypeAdapter[list[AppSecret]] = TypeAdapter(list[AppSecret])


class AppsAPI(ClientCore):
    """Apps and their secrets."""

    async def create_app(
        self, name: str, *, org_slug: str = "personal", network: str | None = None
    ) -> App:
        """Create the app ``name`` in ``org_slug``. Fly answers with the new app's ``id`` only,
        so the returned `App` has ``id`` and ``name`` set.

        A create whose answer was lost is resolved by reading the app back (and Fly is sent an
        ``idempotency_key`` that lets it recognise the repeat itself).

        :raises UnprocessableError: the name is taken (``code == "name_taken"``), possibly by an
            app of an organization you cannot see: app names are global.
        """
        body = without_none(
            name=name,
            org_slug=org_slug,
            network=network,
            idempotency_key=secrets.token_hex(16),
        )
        call = ApiRequest("POST", "/v1/apps", "create_app", org_slug, safe=False, json=body)

        def parse(response: httpx.Response) -> App:
            created = parse_json(response) or {}
            return App.model_validate({**created, "name": name}, context=SERVER_CONTEXT)

        return await self._requester.call(call, parse, recover=partial(self._find_app, name))

    async def get_app(self, name: str) -> App:
        """The app ``name``.

        :raises NotFoundError: no such app (an `APIError` 403 means it belongs to an
            organization the token cannot see).
        """
        call = ApiRequest("GET", app_path(name), "get_app", name, safe=True)
        return await self._requester.call(call, parse_model(App))

    async def list_apps(self, org_slug: str = "personal") -> list[App]:
        """Every app of the organization ``org_slug`` (all pages)."""
        apps: list[App] = []
        query = [("org_slug", org_slug)]
        while True:
            call = ApiRequest("GET", "/v1/apps", "list_apps", org_slug, safe=True, params=query)
            page = await self._requester.call(call, parse_model(AppsPage))
            apps += page.apps
            if not page.next_cursor:
                return apps
            query = [("org_slug", org_slug), ("limit", "1000"), ("cursor", page.next_cursor)]

    async def delete_app(self, name: str, *, force: bool = False) -> None:
        """Delete the app; with ``force``, its machines are stopped and deleted with it."""
        call = ApiRequest(
            "DELETE", app_path(name), "delete_app", name, safe=True, params=params(force=force)
        )
        await self._requester.call(call, parse_none)

    async def _find_app(self, name: str) -> App | None:
        try:
            return await self.get_app(name)
        except NotFoundError:
            return None

    async def list_secrets(self, app: str, *, show_values: bool = False) -> list[AppSecret]:
        """The app's secrets; their values only with ``show_values`` (as `SecretStr`)."""
        path = f"{app_path(app)}/secrets"
        query = params(show_secrets=show_values)
        call = ApiRequest("GET", path, "list_secrets", app, safe=True, params=query)
        return await self._requester.call(call, _parse_secrets)

    async def set_secret(self, app: str, name: str, value: str | SecretStr) -> AppSecret:
        """Create or replace the secret ``name``. Machines see it once updated (pass the
        returned ``version`` as ``min_secrets_version``)."""
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        path = f"{app_path(app)}/secrets/{quote_segment(name)}"
        call = ApiRequest("POST", path, "set_secret", app, safe=True, json={"value": plain})
        return await self._requester.call(call, parse_model(AppSecret))

    async def delete_secret(self, app: str, name: str) -> None:
        """Delete the secret ``name``."""
        path = f"{app_path(app)}/secrets/{quote_segment(name)}"
        call = ApiRequest("DELETE", path, "delete_secret", app, safe=True)
        await self._requester.call(call, parse_none)


def _parse_secrets(response: httpx.Response) -> list[AppSecret]:
    body = parse_json(response) or {}
    return _SECRETS.validate_python(body.get("secrets") or [], context=SERVER_CONTEXT)
