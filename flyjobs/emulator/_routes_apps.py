"""Routes for apps (``/v1/apps``) and app secrets (``/v1/apps/{app}/secrets``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._errors import bad_request, not_found
from ._http import emulator_of, json_response, query_bool, read_json
from ._validate import check_secrets

__all__ = ("APP_ROUTES",)


async def create_app(request: Request) -> Response:
    """``POST /v1/apps``: 201 with the app as ``GET /v1/apps/{app}`` shows it (name,
    organization, status, id: flyctl reads the name back) plus the spec's ``created_at``; the
    name comes as ``app_name`` (guide) or ``name`` (spec, fly-go); 422 ``name_taken`` when it
    is used."""
    body = await read_json(request)
    app = emulator_of(request).create_app(
        body.get("name") or body.get("app_name"), body.get("org_slug"), body.get("network")
    )
    return json_response({**app.to_dict(0), "created_at": app.created_at_ms}, 201)


async def list_apps(request: Request) -> Response:
    """``GET /v1/apps?org_slug=`` (required)."""
    org_slug = request.query_params.get("org_slug")
    if not org_slug:
        raise bad_request("org_slug is required")
    emulator = emulator_of(request)
    apps = [
        app.to_dict(len(emulator.app_machines(app.name)))
        for app in emulator.apps.values()
        if app.org_slug == org_slug
    ]
    return json_response({"total_apps": len(apps), "apps": apps})


async def get_app(request: Request) -> Response:
    """``GET /v1/apps/{app}``."""
    emulator = emulator_of(request)
    app = emulator.app(request.path_params["app_name"])
    return json_response(app.to_dict(len(emulator.app_machines(app.name))))


async def delete_app(request: Request) -> Response:
    """``DELETE /v1/apps/{app}``: 202; its machines are destroyed with it (``force=true``,
    which Fly's docs mention, changes nothing here: the deletion is immediate anyway)."""
    await emulator_of(request).delete_app(request.path_params["app_name"])
    return Response(status_code=202)


async def list_secrets(request: Request) -> Response:
    """``GET …/secrets``: names and digests (values with ``show_secrets=true``)."""
    app = emulator_of(request).app(request.path_params["app_name"])
    show = query_bool(request, "show_secrets")
    return json_response({"secrets": [s.to_dict(show_value=show) for s in app.secrets.values()]})


async def update_secrets(request: Request) -> Response:
    """``POST …/secrets`` with ``{"values": {NAME: value or null}}``: set or unset several.

    Machines see secrets as of their creation or last update, as on Fly.
    """
    body = await read_json(request)
    app = emulator_of(request).app(request.path_params["app_name"])
    values = body.get("values")
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and k and (v is None or isinstance(v, str)) for k, v in values.items()
    ):
        raise bad_request("values must map secret names to strings (or null to unset)")
    check_secrets(values)
    app.set_secrets(values)
    return json_response(
        {
            "secrets": [s.to_dict(show_value=False) for s in app.secrets.values()],
            "version": app.secrets_version,
            "Version": app.secrets_version,
        }
    )


async def get_secret(request: Request) -> Response:
    """``GET …/secrets/{name}``."""
    app = emulator_of(request).app(request.path_params["app_name"])
    secret = app.secrets.get(request.path_params["secret_name"])
    if secret is None:
        raise not_found(f"secret {request.path_params['secret_name']!r} not found")
    return json_response(secret.to_dict(show_value=query_bool(request, "show_secrets")))


async def set_secret(request: Request) -> Response:
    """``POST …/secrets/{name}`` with ``{value}``: 201."""
    body = await read_json(request)
    app = emulator_of(request).app(request.path_params["app_name"])
    name = request.path_params["secret_name"]
    value = body.get("value")
    if not isinstance(value, str):
        raise bad_request("value is required and must be a string")
    check_secrets({name: value})
    app.set_secrets({name: value})
    response = app.secrets[name].to_dict(show_value=False)
    response.update(version=app.secrets_version, Version=app.secrets_version)
    return json_response(response, 201)


async def delete_secret(request: Request) -> Response:
    """``DELETE …/secrets/{name}``: 200 with the new secrets version, 404 if unknown."""
    app = emulator_of(request).app(request.path_params["app_name"])
    name = request.path_params["secret_name"]
    if name not in app.secrets:
        raise not_found(f"secret {name!r} not found")
    app.set_secrets({name: None})
    return json_response({"version": app.secrets_version, "Version": app.secrets_version})


_A = "/v1/apps/{app_name}"
APP_ROUTES = [
    Route("/v1/apps", list_apps, methods=["GET"]),
    Route("/v1/apps", create_app, methods=["POST"]),
    Route(_A, get_app, methods=["GET"]),
    Route(_A, delete_app, methods=["DELETE"]),
    Route(_A + "/secrets", list_secrets, methods=["GET"]),
    Route(_A + "/secrets", update_secrets, methods=["POST"]),
    Route(_A + "/secrets/{secret_name}", get_secret, methods=["GET"]),
    Route(_A + "/secrets/{secret_name}", set_secret, methods=["POST"]),
    Route(_A + "/secrets/{secret_name}", delete_secret, methods=["DELETE"]),
]
