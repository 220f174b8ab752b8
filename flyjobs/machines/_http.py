"""The request layer of `MachinesClient`: rate limit → send → map errors → retry.

This is the one place where flyjobs touches httpx. Every httpx exception is translated here, with
``raise ... from exc``, into `TransportError`; every error status into an `APIError` subclass.
Neither messages nor log lines ever contain request headers or bodies, so neither can contain the
token; error text from the server is scrubbed of the token as well.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import anyio
import httpx
import pydantic

from .._exceptions import APIError, ConfigError, FlyjobsError, TransportError
from ._errors import api_error, retry_after_s
from ._ratelimit import RateLimiter
from ._retry import RetryPolicy
from ._validation import SERVER_CONTEXT

__all__ = (
    "ApiRequest",
    "Requester",
    "authorization",
    "paced_already",
    "patient_until",
    "may_have_reached_server",
    "normalize_token",
    "parse_json",
    "parse_list",
    "parse_model",
    "parse_none",
)

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)

log = logging.getLogger("flyjobs.machines")

Params = Sequence[tuple[str, str]]
Parse = Callable[[httpx.Response], T]

#: httpx failures after which the request certainly did not reach the server.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: httpx failures that are programming or configuration errors: never retried.
_FATAL: Final = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError)
#: Prefixes of macaroon tokens, sent under the ``FlyV1`` scheme (fly-go's ``tokens.Parse``).
_MACAROON_PREFIXES: Final = ("fm1a", "fm1r", "fm2")
#: Throttled retries counted for backoff growth (the backoff stays at its cap past this).
_MAX_THROTTLE_STEPS: Final = 6

_PATIENCE: ContextVar[float | None] = ContextVar("flyjobs_machines_patience", default=None)
_PACED: ContextVar[tuple[str, str] | None] = ContextVar("flyjobs_machines_paced", default=None)


@contextlib.contextmanager
def paced_already(action: str, scope: str) -> Iterator[None]:
    """The first request for ``action`` on ``scope`` sent in this context has waited for its
    turn already (`MachinesClient.pace`): it is sent without drawing from the bucket again."""
    token = _PACED.set((action, scope))
    try:
        yield
    finally:
        _PACED.reset(token)


@contextlib.contextmanager
def patient_until(deadline: float) -> Iterator[None]:
    """Requests sent in this context (and tasks started in it) wait out throttling (429) until
    ``deadline`` (``anyio.current_time()`` seconds): each 429 is retried after its
    ``Retry-After`` (or a backoff), and none counts against the retry budget. A 429 that
    cannot be waited out before ``deadline`` raises `RateLimitedError`."""
    token = _PATIENCE.set(deadline)
    try:
        yield
    finally:
        _PATIENCE.reset(token)


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One API request, and what may be done if its outcome is unknown.

    :ivar action: rate-limit bucket (see `RateLimits`).
    :ivar scope: the machine id, or the app name, the bucket is counted for.
    :ivar safe: repeating the request after an unknown outcome (408, a dropped connection, a
        5xx) cannot do harm, because it is a read or converges to the same end state.
    :ivar long_poll: a 408 answer means "not yet" and is handed to the parser (``/wait``).
    :ivar read_timeout_s: read timeout for this request, when it must outlast a server wait.
    :ivar base_url: the host to send to, when it is not the Machines API's (logs).
    """

    method: str
    path: str
    action: str
    scope: str
    safe: bool
    params: Params = ()
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    long_poll: bool = False
    read_timeout_s: float | None = None
    base_url: str | None = None


@dataclass(slots=True)
class _Failure:
    error: FlyjobsError
    cause: BaseException | None
    retryable: bool
    #: the server may have acted on the request
    ambiguous: bool
    retry_after_s: float | None = None
    #: a 429: the server did not act, and asks to come back later
    throttled: bool = False


def normalize_token(raw: str | None) -> str:
    """The bare token: surrounding whitespace and a ``Bearer``/``FlyV1`` scheme removed.

    :raises ConfigError: no token, or one with whitespace or control characters inside (it
        would be rejected as a header value, by a message that might quote it).
    """
    token = (raw or "").strip()
    scheme, _, rest = token.partition(" ")
    if scheme.lower() in ("bearer", "flyv1"):
        token = rest.strip()
    if not token:
        raise ConfigError("no Fly API token: set FLY_API_TOKEN or pass token=")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError("the Fly API token contains whitespace or control characters")
    return token


def authorization(token: str) -> str:
    """The ``Authorization`` value fly-go sends for ``token`` (a bare token or a comma-joined
    list, as ``fly tokens create`` prints): ``FlyV1`` and the macaroons (``fm1a_…``, ``fm1r_…``,
    ``fm2_…``) when there are any, other tokens then left out; else ``Bearer`` and the token."""
    parts = [part.strip() for part in token.split(",") if part.strip()]
    macaroons = [part for part in parts if part.partition("_")[0] in _MACAROON_PREFIXES]
    if macaroons:
        return "FlyV1 " + ",".join(macaroons)
    return "Bearer " + ",".join(parts)


class Requester:
    """Sends `ApiRequest`s: paced by the rate limiter, retried per the `RetryPolicy`, errors
    mapped."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        token: str,
        retry: RetryPolicy,
        limiter: RateLimiter | None,
        timeout_s: float,
    ) -> None:
        self._http = http
        self._base_url = base_url
        # A header (httpx's reprs of headers hide its value), not an httpx.Auth, whose flow
        # costs each request a generator and a header rewrite. The client's default when it is
        # ours; a client given by the caller gets it with each request.
        header = authorization(token)
        self._authorization = (
            {} if http.headers.get("Authorization") == header else {"Authorization": header}
        )
        self._token = token
        self._retry = retry
        self._limiter = limiter
        self._timeout_s = timeout_s
        # httpx.USE_CLIENT_DEFAULT when the client's own timeout is this one (no copy per request).
        self._timeout: Any = httpx.Timeout(timeout_s)
        if http.timeout == self._timeout:
            self._timeout = httpx.USE_CLIENT_DEFAULT
        self._parsed_bases: dict[str, httpx.URL] = {}
        self._rng = random.Random()
        self.closed = False
        #: ``anyio.current_time()`` of the last 429 answer (None: never throttled).
        self.throttled_at: float | None = None

    async def pace(self, action: str, scope: str) -> None:
        """Wait until a request for ``action`` on ``scope`` may be sent (no wait unpaced)."""
        if self._limiter is not None:
            await self._limiter.acquire(action, scope)

    async def pace_after_throttling(
        self, action: str, scope: str, retry_after_s: float | None
    ) -> None:
        """Wait, after a 429 for ``action`` on ``scope`` that was not retried here, until a
        request may be sent again, and take that turn (see `pace`): with pacing, the bucket's
        next turn (the 429 emptied it for the backoff); without, the ``Retry-After``."""
        if self._limiter is not None:
            await self._limiter.acquire(action, scope)
        else:
            await anyio.sleep(retry_after_s if retry_after_s is not None else self._retry.max_s)

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the token, and of each token of a comma-joined
        list (fly-go sends only some of them), replaced."""
        for secret in (self._token, *(part.strip() for part in self._token.split(","))):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    async def call(
        self,
        call: ApiRequest,
        parse: Parse[T],
        *,
        recover: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T:
        """Send ``call`` until it succeeds or the retry budget is spent; return ``parse``'s value.

        After an unknown outcome, ``recover`` (if given) is asked whether the request in fact
        took effect; its non-``None`` answer is returned instead of repeating the request.
        Without ``recover``, an unsafe call is not repeated after an unknown outcome.
        """
        ambiguous_seen = False
        attempt = throttles = sends = 0
        patience = _PATIENCE.get()
        while True:
            attempt += 1
            sends += 1
            outcome = await self._attempt(call, attempt, ambiguous_seen, first=sends == 1)
            if isinstance(outcome, httpx.Response):
                return self._parse(call, outcome, parse)
            if outcome.throttled:
                now = self.throttled_at = anyio.current_time()
                throttles += 1
                step = min(throttles, _MAX_THROTTLE_STEPS)
                delay_s = self._retry.delay_s(step, outcome.retry_after_s, self._rng)
                if self._limiter is not None:
                    # Back off, then pace: the bucket waits out the delay, and this retry
                    # queues behind the requests already waiting for it (a retry sent at once
                    # beside them would only be refused again).
                    self._limiter.penalize(call.action, call.scope, delay_s, now)
                if patience is not None:
                    if now + delay_s > patience:
                        raise outcome.error from outcome.cause
                    attempt -= 1  # throttling is not a failure: the budget is kept
                    if self._limiter is None:
                        await anyio.sleep(delay_s)
                    continue
            ambiguous_seen = ambiguous_seen or outcome.ambiguous
            if ambiguous_seen and recover is not None:
                found = await self._recover(recover, outcome)
                if found is not None:
                    return found
            if not self._may_retry(call, outcome, attempt, recover is not None):
                raise outcome.error from outcome.cause
            if not (outcome.throttled and self._limiter is not None):
                await anyio.sleep(self._retry.delay_s(attempt, outcome.retry_after_s, self._rng))

    def _may_retry(
        self, call: ApiRequest, failure: _Failure, attempt: int, recoverable: bool
    ) -> bool:
        if not failure.retryable or attempt >= self._retry.max_attempts:
            return False
        if failure.ambiguous and not (call.safe or recoverable):
            return False
        wait_s = failure.retry_after_s
        return wait_s is None or wait_s <= self._retry.max_retry_after_s

    async def _recover(
        self, recover: Callable[[], Awaitable[T | None]], failure: _Failure
    ) -> T | None:
        try:
            return await recover()
        except FlyjobsError:
            # Whether the request took effect cannot be told: repeating it could do it twice.
            raise failure.error from failure.cause

    async def _attempt(
        self, call: ApiRequest, attempt: int, ambiguous_seen: bool, *, first: bool
    ) -> httpx.Response | _Failure:
        if self.closed:
            raise TransportError(f"{call.method} {call.path}: the MachinesClient is closed")
        if self._limiter is not None and not (first and _PACED.get() == (call.action, call.scope)):
            await self._limiter.acquire(call.action, call.scope)
        started = time.perf_counter()
        try:
            if call.safe:
                response = await self._send(call)
            else:
                # Once sent, a request that is unsafe to repeat (a create) is seen through even
                # if the caller is cancelled: abandoning it would leave the server acting on
                # it after the caller has looked for (and not found) what it made.
                with anyio.CancelScope(shield=True):
                    response = await self._send(call)
        except httpx.HTTPError as exc:
            _log_line(call, type(exc).__name__, started, attempt)
            return _transport_failure(call, exc, self.redact)
        _log_line(call, str(response.status_code), started, attempt)
        if response.is_success or (call.long_poll and response.status_code == 408):
            return response
        if ambiguous_seen and call.method == "DELETE" and response.status_code == 404:
            return response  # an earlier attempt whose answer was lost did delete it
        return self._status_failure(call, response)

    async def _send(self, call: ApiRequest) -> httpx.Response:
        timeout = self._timeout
        if call.read_timeout_s is not None:
            timeout = httpx.Timeout(self._timeout_s, read=call.read_timeout_s)
        request = self._http.build_request(
            call.method,
            self._url(call),
            json=call.json,
            headers={**call.headers, **self._authorization} or None,
            timeout=timeout,
        )
        return await self._http.send(request, auth=None)

    def _url(self, call: ApiRequest) -> httpx.URL:
        # From the parsed base URL and the request's path (quoted already): parsing and
        # checking the whole URL string again costs each request more than its JSON does.
        base = call.base_url or self._base_url
        parsed = self._parsed_bases.get(base)
        if parsed is None:
            parsed = self._parsed_bases[base] = httpx.URL(base)
        target = parsed.raw_path.rstrip(b"/") + call.path.encode("ascii")
        if call.params:
            target += b"?" + urlencode(call.params, quote_via=quote).encode("ascii")
        return parsed.copy_with(raw_path=target)

    def _status_failure(self, call: ApiRequest, response: httpx.Response) -> _Failure:
        error = api_error(response, call.method, call.path, self.redact)
        status = response.status_code
        if status == 429:
            return _Failure(error, None, True, False, retry_after_s(response), throttled=True)
        if status == 408 or status in self._retry.retry_statuses:
            return _Failure(error, None, True, True, retry_after_s(response))
        return _Failure(error, None, False, status >= 500)

    def _parse(self, call: ApiRequest, response: httpx.Response, parse: Parse[T]) -> T:
        try:
            return parse(response)
        except (ValueError, pydantic.ValidationError) as exc:
            summary = _summarize(exc)
            # Not chained: pydantic's message quotes the input, which may hold secret values.
            raise APIError(
                response.status_code,
                f"unexpected answer: {summary}",
                method=call.method,
                path=call.path,
                request_id=response.headers.get("fly-request-id"),
            ) from None


def may_have_reached_server(exc: BaseException) -> bool:
    """Whether a request that failed with ``exc`` may have been acted on by the server."""
    if isinstance(exc, TransportError):
        return not isinstance(exc.__cause__, _NOT_SENT)
    return isinstance(exc, APIError) and (exc.status_code == 408 or exc.status_code >= 500)


def _transport_failure(
    call: ApiRequest, exc: httpx.HTTPError, redact: Callable[[str], str]
) -> _Failure:
    detail = redact(str(exc)) or "no detail"
    error = TransportError(f"{call.method} {call.path}: {type(exc).__name__}: {detail}")
    if isinstance(exc, _FATAL) or not isinstance(exc, httpx.TransportError):
        return _Failure(error, exc, False, False)
    return _Failure(error, exc, True, not isinstance(exc, _NOT_SENT))


def _log_line(call: ApiRequest, outcome: str, started: float, attempt: int) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    again = f" (attempt {attempt})" if attempt > 1 else ""
    log.debug("%s %s %s %.0fms%s", call.method, call.path, outcome, elapsed_ms, again)


def _summarize(exc: ValueError) -> str:
    # Never the input values: an answer may hold secret values the caller asked for.
    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors(include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return f"{exc.error_count()} invalid field(s), first {where}: {first['msg']}"
    return f"invalid body: {exc}"


def parse_json(response: httpx.Response) -> Any:
    """The JSON body (``None`` when it is empty)."""
    return response.json() if response.content else None


def parse_none(response: httpx.Response) -> None:
    """Ignore the body."""
    return None


def parse_model(model: type[M]) -> Parse[M]:
    """A parser of a JSON body into ``model``, with checks meant for callers switched off.

    pydantic reads the JSON itself: no dicts and lists are built only to be validated."""

    def parse(response: httpx.Response) -> M:
        return model.model_validate_json(response.content or b"{}", context=SERVER_CONTEXT)

    return parse


def parse_list(model: type[M]) -> Parse[list[M]]:
    """A parser of a JSON array of ``model``."""
    adapter = _list_adapter(model)

    def parse(response: httpx.Response) -> list[M]:
        items: list[M] = adapter.validate_json(response.content or b"[]", context=SERVER_CONTEXT)
        return items

    return parse


@functools.cache
def _list_adapter(model: type[pydantic.BaseModel]) -> pydantic.TypeAdapter[Any]:
    # Building an adapter compiles a validator: far too slow to do per request.
    return pydantic.TypeAdapter(list[model])  # type: ignore[valid-type]
