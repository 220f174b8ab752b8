"""The gate every request passes first, as one pure ASGI middleware: auth, Fly's rate
limits, added latency, injected faults (5xx answers, dropped connections), and the
``fly-request-id`` header of every answer.

Order matters: a request without a valid token is answered 401 before anything else, so it
touches nothing and costs no rate-limit tokens.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import random
import secrets
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._config import EmulatorConfig
from ._errors import error_body

__all__ = ("Gate", "RateBuckets")

_SERVER_ERRORS = (500, 502, 503)


class RateBuckets:
    """Token buckets per action and per machine (or app), with Fly's published figures.

    An action is the method plus the route template (``POST /v1/apps/{app}/machines/{id}/stop``);
    Get Machine has its own, larger budget.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._buckets: dict[tuple[str, str, str], tuple[float, float]] = {}

    def take(self, method: str, path: str, now: float) -> float | None:
        """Spend one token at time ``now`` (monotonic seconds); return None if allowed, else
        seconds until a token is available."""
        template, subject = _action_of(path)
        is_get_machine = method == "GET" and template == "/v1/apps/{app}/machines/{id}"
        rate = self._config.get_rate_per_s if is_get_machine else self._config.rate_per_s
        burst = self._config.get_rate_burst if is_get_machine else self._config.rate_burst
        key = (method, template, subject)
        tokens, last = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
        self._buckets[key] = (tokens - 1.0, now)
        return None


class Gate:
    """Pure ASGI middleware in front of the API (the outermost layer: a dropped connection
    must not be answered by an inner layer)."""

    def __init__(
        self,
        app: ASGIApp,
        config: EmulatorConfig,
        tokens: list[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = app
        self._config = config
        self._clock = clock
        self._tokens = [_bare_token(token.encode()) for token in tokens]
        self._limiter = RateBuckets(config)
        self._random = random.Random(config.seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        send = _with_request_id(send)
        if not self._authorized(scope):
            await _answer(send, 401, error_body("You must be authenticated to view this."))
            return
        config = self._config
        if config.rate_limits:
            wait_s = self._limiter.take(scope["method"], scope["path"], self._clock())
            if wait_s is not None:
                body = error_body("rate limit exceeded: too many requests for this action")
                await _answer(send, 429, body, retry_after=str(max(1, math.ceil(wait_s))))
                return
        latency_s = config.latency_s
        if config.create_latency_s > 0 and _is_create(scope):
            # Fly has the whole request before its slow part (the image pull): the machine is
            # made even if the client has stopped waiting for the answer.
            receive = await _buffered(receive)
            latency_s += config.create_latency_s
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        if config.error_rate > 0 and self._random.random() < config.error_rate:
            status = self._random.choice(_SERVER_ERRORS)
            await _answer(send, status, error_body("injected server error"))
            return
        if config.drop_rate > 0 and self._random.random() < config.drop_rate:
            if scope["method"] != "GET" and self._random.random() < 0.5:
                # The change happens, the answer is lost: the client cannot know which.
                await self._app(scope, receive, _discard)
            await _drop_connection(send)
            return
        await self._app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        value = b""
        for name, header in scope["headers"]:
            if name == b"authorization":
                value = header
                break
        token = _bare_token(value)
        matched = False
        for accepted in self._tokens:
            # Compare with every token, in constant time, so timing tells nothing.
            matched |= hmac.compare_digest(token, accepted)
        return matched and bool(token)


def _bare_token(value: bytes) -> bytes:
    """The token without its scheme: clients send ``Bearer <token>``, and fly-go and flyjobs
    send Fly's macaroon tokens as ``FlyV1 <token>`` (some tools nest the two); every spelling
    matches the same accepted token."""
    token = value.strip()
    while True:
        scheme, _, rest = token.partition(b" ")
        if scheme.lower() not in (b"bearer", b"flyv1"):
            return token
        token = rest.strip()


async def _buffered(receive: Receive) -> Receive:
    """Read the whole request body now; the returned ``receive`` replays it, then reports a
    disconnect once the client has gone."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

    async def replayed() -> Message:
        return replay.pop() if replay else await receive()

    return replayed


def _is_create(scope: Scope) -> bool:
    """Whether the request creates a machine (``POST /v1/apps/{app}/machines``)."""
    parts = scope["path"].strip("/").split("/")
    return scope["method"] == "POST" and len(parts) == 4 and parts[3] == "machines"


def _action_of(path: str) -> tuple[str, str]:
    """(route template, subject) of a path; the subject is the machine id, else the app."""
    parts = path.strip("/").split("/")
    offset = 1 if parts[:1] == ["api"] else 0
    app_index, machine_index = 2 + offset, 4 + offset
    subject = ""
    if len(parts) > app_index:
        subject = parts[app_index]
        parts[app_index] = "{app}"
    if len(parts) > machine_index and parts[3 + offset] == "machines":
        subject = parts[machine_index]
        parts[machine_index] = "{id}"
    return "/" + "/".join(parts[: machine_index + 2]), subject


async def _answer(send: Send, status: int, body: bytes, *, retry_after: str | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_request_id(send: Send) -> Send:
    """``send`` adding a ``fly-request-id`` header to the answer, as Fly does on every answer
    (fly-go reads it into its errors, for a support request)."""
    request_id = secrets.token_hex(13).encode()

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), (b"fly-request-id", request_id)]
            message = {**message, "headers": headers}
        await send(message)

    return send_with_id


async def _discard(_message: Message) -> None:
    return None


async def _drop_connection(send: Send) -> None:
    """Cut the connection mid-answer, as a network failure would: the client reads the end
    of the stream where it expects its answer.

    ASGI has no message to abort a connection; its servers close the connection of an app
    that returns with its response unfinished.
    """
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1")]
    await send({"type": "http.response.start", "status": 502, "headers": headers})
