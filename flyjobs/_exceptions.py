"""The one exception tree of flyjobs.

Every error flyjobs raises derives from `FlyjobsError`; no httpx, msgpack or pydantic exception
reaches a caller through flyjobs' own calls (they are translated at the boundary, with the original
kept as ``__cause__``)::

    FlyjobsError
    ├── ConfigError               a setting is missing or invalid (names the variable / key)
    ├── SerializationError        (also TypeError) a value cannot be encoded or decoded
    ├── APIError                  the Machines API answered with an error status
    │   ├── BadRequestError           400
    │   ├── AuthenticationError       401
    │   ├── ForbiddenError            403 (e.g. an app of an org the token cannot see)
    │   ├── NotFoundError             404
    │   ├── ConflictError             409
    │   │   └── LeaseHeldError            409 because another holder's lease is live
    │   ├── PreconditionFailedError   412
    │   ├── UnprocessableError        422 (e.g. app name taken)
    │   ├── RateLimitedError          429, after the retry budget was spent
    │   └── ServerError               5xx, after the retry budget was spent
    ├── TransportError            the API could not be reached (connection refused/reset, ...)
    ├── FlyjobsTimeoutError       (also TimeoutError) a deadline passed
    │   ├── WaitTimeoutError          a machine did not reach a state in time
    │   └── CallTimeoutError          a remote call passed its `timeout_s` (also a CallError)
    ├── TooManyFailuresError      a map stopped at its `max_failures`; carries the failures
    ├── BudgetExceededError       a map or pool stopped before its `max_cost_usd`; carries
    │                             the outcomes so far
    └── CallError                 a remote call ended without a value
        ├── RemoteError               the function raised; carries the remote traceback
        ├── RemoteImportError         the machine could not import the function (or a class
        │                             its arguments name): the image lacks the code
        ├── MachineCrashedError       the machine exited without delivering a result
        │   └── OutOfMemoryError          ... because it ran out of `memory_mb`
        ├── ResultTooLargeError       the result was over the inbox's limit (use a store)
        ├── UnknownCallError          (also LookupError) `Call.from_id` found no such call
        └── CallCancelledError        the call was cancelled (its machine was destroyed)

Secrets never appear in these messages: they are built from status codes, Fly's error text,
method and path only (never headers or bodies of requests).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "CallCancelledError",
    "CallError",
    "CallTimeoutError",
    "ConfigError",
    "ConflictError",
    "FlyjobsError",
    "FlyjobsTimeoutError",
    "ForbiddenError",
    "LeaseHeldError",
    "MachineCrashedError",
    "NotFoundError",
    "OutOfMemoryError",
    "PreconditionFailedError",
    "RateLimitedError",
    "RemoteError",
    "RemoteImportError",
    "ResultTooLargeError",
    "UnknownCallError",
    "SerializationError",
    "ServerError",
    "TooManyFailuresError",
    "TransportError",
    "UnprocessableError",
    "WaitTimeoutError",
)


class FlyjobsError(Exception):
    """Root of every error flyjobs raises."""


class ConfigError(FlyjobsError):
    """A setting is missing or invalid; the message names where it can be supplied."""


class SerializationError(FlyjobsError, TypeError):
    """A value cannot be encoded into, or decoded from, a flyjobs payload."""


class APIError(FlyjobsError):
    """The Machines API answered with an error status.

    :ivar status_code: the HTTP status code.
    :ivar error: Fly's ``error`` text from the body (or the raw body when it was not JSON).
    :ivar code: Fly's ``status`` code from the body (``name_taken``, ``unknown``, ...), if any.
    :ivar method: the HTTP method of the request.
    :ivar path: the URL path of the request (never the query, which may carry nothing secret but
        is noise; never the headers).
    :ivar request_id: the ``fly-request-id`` response header, if any.
    """

    def __init__(
        self,
        status_code: int,
        error: str,
        *,
        code: str | None = None,
        method: str = "",
        path: str = "",
        request_id: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.error = error
        self.code = code
        self.method = method
        self.path = path
        self.request_id = request_id
        where = f" on {method} {path}" if method else ""
        extra = f" [{code}]" if code else ""
        rid = f" (fly-request-id {request_id})" if request_id else ""
        super().__init__(f"{status_code}{extra}{where}: {error}{rid}")


class BadRequestError(APIError):
    """400: the API rejected the request as malformed."""


class AuthenticationError(APIError):
    """401: the token is missing or not accepted. Check ``FLY_API_TOKEN``."""


class ForbiddenError(APIError):
    """403: the token may not do this (Fly answers 403 for an app of another organization)."""


class NotFoundError(APIError):
    """404: the app or machine does not exist (or no longer exists)."""


class ConflictError(APIError):
    """409: the request conflicts with the machine's current state or version."""


class LeaseHeldError(ConflictError):
    """409: another holder's lease on the machine is live (or the nonce sent is stale)."""


class PreconditionFailedError(APIError):
    """412: a version guard (``machine_version``) did not match."""


class UnprocessableError(APIError):
    """422: the request was understood but refused (for example ``name_taken``)."""


class RateLimitedError(APIError):
    """429 after the retry budget was spent.

    :ivar retry_after_s: the server's ``Retry-After`` in seconds, if it sent one.
    """

    def __init__(
        self,
        status_code: int,
        error: str,
        *,
        retry_after_s: float | None = None,
        code: str | None = None,
        method: str = "",
        path: str = "",
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            status_code, error, code=code, method=method, path=path, request_id=request_id
        )
        self.retry_after_s = retry_after_s


class ServerError(APIError):
    """5xx after the retry budget was spent."""


class TransportError(FlyjobsError):
    """The API could not be reached, or the connection broke mid-request."""


class FlyjobsTimeoutError(FlyjobsError, TimeoutError):
    """A flyjobs deadline passed."""


class WaitTimeoutError(FlyjobsTimeoutError):
    """A machine did not reach any of the awaited states within the timeout."""


class CallError(FlyjobsError):
    """A remote call ended without a value.

    :ivar call_id: the call's id (it names the machine too).
    :ivar machine_id: the machine that ran the call, if one was created.
    :ivar attempts: how many times the call was run (1 when it was not retried).
    """

    call_id: str | None = None
    machine_id: str | None = None
    attempts: int = 1


class CallTimeoutError(FlyjobsTimeoutError, CallError):
    """A remote call did not finish within its ``timeout_s``; its machine was destroyed."""


class TooManyFailuresError(FlyjobsError):
    """A map stopped after ``max_failures`` failed inputs; the inputs still running were
    cancelled and their machines destroyed.

    :ivar failures: each failed input's index and its error, in the order they failed.
    """

    def __init__(self, message: str, failures: list[tuple[int, BaseException]]) -> None:
        super().__init__(message)
        self.failures = failures


class BudgetExceededError(FlyjobsError):
    """A map (or pool) with ``max_cost_usd`` stopped before its machines would cost more: what
    it had spent, what its running machines may still cost and what the next machine (or
    input) could cost, up to its ``timeout_s``, would have crossed the cap. No more inputs were
    handed out and its machines were stopped; the inputs not run end with this error.

    :ivar max_cost_usd: the cap, in USD.
    :ivar spent_usd: USD spent when it stopped (billed, or so far for machines still running).
    :ivar outcomes: the `Outcome` of each input that ended before it stopped (a list that
        grows while the machines still running finish).
    """

    def __init__(
        self, message: str, *, max_cost_usd: float, spent_usd: float, outcomes: list[Any]
    ) -> None:
        super().__init__(message)
        self.max_cost_usd = max_cost_usd
        self.spent_usd = spent_usd
        self.outcomes = outcomes


class RemoteError(CallError):
    """The remote function raised an exception whose type cannot be rebuilt here.

    :ivar type_name: the remote exception's ``module.qualname``.
    :ivar remote_traceback: the formatted remote traceback text.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        super().__init__(f"{type_name}: {message}\n\nRemote traceback:\n{remote_traceback}")


class RemoteImportError(CallError):
    """The machine could not import the function, or a class its arguments name.

    :ivar type_name: the remote exception's ``module.qualname`` (``ModuleNotFoundError``...).
    :ivar remote_traceback: the formatted remote traceback text.
    """

    def __init__(self, what: str, type_name: str, message: str, remote_traceback: str) -> None:
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        super().__init__(
            f"the machine could not import {what}: {type_name}: {message}. The image a machine"
            " boots must hold your dependencies (and, with code='image', your code): build it"
            " from your project with flyjobs' Dockerfile, or point image= (FLYJOBS_IMAGE) at"
            " one that does; with code sync (the default) your project's own modules ship with"
            " each call (`flyjobs code` lists them); on the local emulator the image is the"
            " installed distributions."
            f"\n\nRemote traceback:\n{remote_traceback}"
        )


class MachineCrashedError(CallError):
    """The machine exited without delivering a result.

    :ivar exit_code: the machine's exit code, if known.
    :ivar output_tail: the last lines the machine printed, if known.
    """

    def __init__(self, message: str, *, exit_code: int | None, output_tail: str = "") -> None:
        self.exit_code = exit_code
        self.output_tail = output_tail
        text = message
        if output_tail:
            text += "\n\nLast output of the machine:\n" + output_tail
        super().__init__(text)


class OutOfMemoryError(MachineCrashedError):
    """The machine was killed for exceeding its memory; raise ``memory_mb``."""


class ResultTooLargeError(CallError):
    """The call's result was over what the caller's inbox accepts
    (``flyjobs._wire.machine.MAX_INBOX_RESULT_BYTES``); results through the object store
    (``FLYJOBS_STORE``) may have any size.

    :ivar output_tail: the last lines the machine printed, if known.
    """

    def __init__(self, message: str, *, output_tail: str = "") -> None:
        self.output_tail = output_tail
        super().__init__(message)


class UnknownCallError(CallError, LookupError):
    """`Call.from_id` found no detached call of that id in the object store (never made
    detached with this store, or its result was already read, or it was cancelled)."""


class CallCancelledError(CallError):
    """The call was cancelled before it finished; its machine was destroyed."""
