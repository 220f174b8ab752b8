"""Turning an error response of the Machines API into the matching `APIError`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from .._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    LeaseHeldError,
    NotFoundError,
    PreconditionFailedError,
    RateLimitedError,
    ServerError,
    UnprocessableError,
)

__all__ = ("api_error", "retry_after_s")

_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    422: UnprocessableError,
    429: RateLimitedError,
}
#: Longest error text kept from a non-JSON body.
_MAX_TEXT = 500


def api_error(
    response: httpx.Response, method: str, path: str, redact: Callable[[str], str]
) -> APIError:
    """The `APIError` subclass for an error ``response`` to ``method path``.

    The message holds Fly's ``error`` text (or ``message``, or the start of a non-JSON body),
    passed through ``redact`` so that a server echoing a credential cannot put it in a message.
    """
    error, code = _error_and_code(response)
    error = redact(error)
    request_id = response.headers.get("fly-request-id")
    status = response.status_code
    if status == 429:
        return RateLimitedError(
            status,
            error,
            retry_after_s=retry_after_s(response),
            code=code,
            method=method,
            path=path,
            request_id=request_id,
        )
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    if cls is ConflictError and (path.endswith("/lease") or "lease" in error.lower()):
        cls = LeaseHeldError
    return cls(status, error, code=code, method=method, path=path, request_id=request_id)


def retry_after_s(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (it may be seconds or an HTTP date), if valid."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_and_code(response: httpx.Response) -> tuple[str, str | None]:
    text = response.text
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return (text.strip()[:_MAX_TEXT] or response.reason_phrase), None
    error = body.get("error") or body.get("message") or response.reason_phrase
    # Fly's usual body is {"error", "status": "<code>"}; the lease envelope is
    # {"status": "error", "message", "code"}.
    status = body.get("status")
    code = body.get("code") if status in (None, "error") else status
    return str(error), (str(code) if code is not None else None)
