"""Small request/response helpers shared by the route modules."""

from __future__ import annotations

import base64
import json
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from ._errors import ErrorReply, bad_request
from ._leases import NONCE_HEADER
from ._state import Emulator

__all__ = (
    "decode_cursor",
    "emulator_of",
    "encode_cursor",
    "json_response",
    "nonce_of",
    "query_bool",
    "read_json",
)

_TRUE = frozenset({"true", "1", "yes", "t"})


def emulator_of(request: Request) -> Emulator:
    """The `Emulator` serving this request."""
    return cast(Emulator, request.app.state.emulator)


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON response; ``bytes`` are sent as they are (already serialized)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(content, status_code, headers=headers, media_type="application/json")


async def read_json(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object; an empty body is ``{}`` unless ``required``.

    A body over the emulator's ``max_body_bytes`` is refused as soon as that is known: from
    its ``Content-Length`` before any of it is read, else once that many bytes came in.

    :raises ErrorReply: 400 when the body is not a JSON object; 413 when it is too large.
    """
    limit = emulator_of(request).config.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if required:
            raise bad_request("a JSON request body is required")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def _too_large(limit: int) -> ErrorReply:
    # Closing the connection spares the server reading (and discarding) the rest of the body.
    return ErrorReply(
        413,
        f"request body too large: the emulator accepts at most {limit} bytes (max_body_bytes); "
        "send large data another way (flyjobs spills large arguments to its object store)",
        headers={"Connection": "close"},
    )


def query_bool(request: Request, name: str) -> bool:
    """True when the query parameter is ``true`` (or ``1``)."""
    return request.query_params.get(name, "").lower() in _TRUE


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]. :raises ErrorReply: 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"invalid_argument: {name} must be an integer") from None
    if not low <= value <= high:
        raise bad_request(f"invalid_argument: {name} must be between {low} and {high}")
    return value


def nonce_of(request: Request) -> str | None:
    """The lease nonce sent in ``fly-machine-lease-nonce``, if any."""
    return request.headers.get(NONCE_HEADER) or None


async def api_error_response(_request: Request, exc: Exception) -> Response:
    """Render an `ErrorReply` as Fly's error body."""
    error = cast(ErrorReply, exc)
    return Response(
        error.body(), error.status_code, headers=error.headers, media_type="application/json"
    )


def encode_cursor(position: tuple[float, str]) -> str:
    """An opaque page cursor for a place in creation order (creation time, id)."""
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The place a cursor from `encode_cursor` names.

    :raises ErrorReply: 400 for anything `encode_cursor` did not make.
    """
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        created_at, id_ = decoded
        if isinstance(created_at, int | float) and isinstance(id_, str):
            return float(created_at), id_
    except (ValueError, TypeError):
        pass
    raise bad_request(
        "invalid_argument: invalid cursor: pass the fly-next-cursor header of the previous page"
    )
