"""The one error the emulator's handlers raise, rendered as Fly's error body."""

from __future__ import annotations

import json
from typing import Any

__all__ = ("ErrorReply", "bad_request", "conflict", "error_body", "machine_not_found", "not_found")


def error_body(text: str, code: str = "unknown", extra: dict[str, Any] | None = None) -> bytes:
    """Fly's error body: ``{"error": text, "status": code}`` plus any extra fields.

    ``code`` is one of the spec's ``main.statusCode`` values (``unknown``, ``name_taken``, ...);
    the HTTP status goes on the response line, not in the body.
    """
    return json.dumps({"error": text, "status": code, **(extra or {})}).encode()


class ErrorReply(Exception):
    """An error answer: HTTP status, Fly's error text, and Fly's status code.

    :param status_code: the HTTP status (400, 401, 404, 408, 409, 412, 422, 429, 5xx).
    :param message: Fly's ``error`` text.
    :param code: Fly's ``status`` code in the body.
    :param extra: more body fields (the lease conflict body carries ``message`` and ``code``).
    :param headers: response headers (``Retry-After``).
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str = "unknown",
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> bytes:
        """The JSON body of this error."""
        return error_body(self.message, self.code, self.extra)


def bad_request(message: str) -> ErrorReply:
    """400 with ``message``."""
    return ErrorReply(400, message)


def not_found(message: str) -> ErrorReply:
    """404 with ``message``."""
    return ErrorReply(404, message)


def machine_not_found() -> ErrorReply:
    """404 for a machine that does not exist or is destroyed, in Fly's words (flyctl matches
    ``machine not found``)."""
    return ErrorReply(404, "not_found: machine not found")


def conflict(message: str) -> ErrorReply:
    """409: the request conflicts with the machine's state or version."""
    return ErrorReply(409, message)
