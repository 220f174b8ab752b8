"""The ASGI application: Starlette routes behind the `Gate` middleware."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ._errors import ErrorReply, error_body
from ._faults import Gate
from ._http import api_error_response
from ._logs import LOG_ROUTES
from ._routes_apps import APP_ROUTES
from ._routes_machines import MACHINE_ROUTES
from ._state import Emulator
from ._ui import build_ui

__all__ = ("build_app",)


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Unknown paths and methods, in Fly's error body (Fly answers "404 page not found")."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "page not found" if status == 404 else str(getattr(exc, "detail", "error"))
    return Response(error_body(message), status, media_type="application/json")


def build_app(
    emulator: Emulator,
    tokens: list[str],
    clock: Callable[[], float] = time.monotonic,
    *,
    ui_key: str | None = None,
) -> ASGIApp:
    """The whole API for ``emulator``, accepting ``tokens``; rate limits read ``clock``. With
    ``ui_key``, the dashboard too, at ``/ui/`` (outside the API's token check: it has its own
    key)."""
    app = Starlette(
        routes=[*APP_ROUTES, *MACHINE_ROUTES, *LOG_ROUTES],
        exception_handlers={ErrorReply: api_error_response, HTTPException: _http_error},
    )
    app.state.emulator = emulator
    api = Gate(app, emulator.config, tokens, clock)
    if ui_key is None:
        return api
    ui = build_ui(emulator, ui_key)

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/ui" or path.startswith("/ui/")):
            await ui(scope, receive, send)
        else:
            await api(scope, receive, send)

    return route
