"""The part of `MachinesClient` every endpoint group builds on: settings, pool, request layer."""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit

import anyio.abc
import httpx

from .._exceptions import ConfigError
from ._held import held_nonce
from ._http import ApiRequest, Params, Requester, authorization, normalize_token
from ._ratelimit import RateLimiter, RateLimits
from ._retry import RetryPolicy

__all__ = (
    "DEFAULT_BASE_URL",
    "ClientCore",
    "RateLimitSetting",
    "app_path",
    "on_this_host",
    "params",
    "quote_segment",
    "without_none",
)

#: Public endpoint of the Machines API (``FLY_API_HOSTNAME`` overrides it).
DEFAULT_BASE_URL: Final = "https://api.machines.dev"
#: Where Fly serves app logs: not the Machines API, but the platform API.
FLY_PLATFORM_URL: Final = "https://api.fly.io"
_FLY_MACHINES_HOSTS: Final = ("api.machines.dev", "_api.internal")
NONCE_HEADER: Final = "fly-machine-lease-nonce"

#: ``"fly"``, ``"off"``, ``"auto"`` or custom `RateLimits`; see `MachinesClient`.
RateLimitSetting = RateLimits | Literal["auto", "fly", "off"]


class ClientCore(anyio.abc.AsyncResource):
    """Settings, connection pool and request layer shared by the endpoint groups; an async
    context manager (anyio's `AsyncResource`) that closes the pool on exit."""

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str | None = None,
        retry: RetryPolicy | None = None,
        rate_limits: RateLimitSetting = "auto",
        timeout_s: float = 30.0,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        logs_url: str | None = None,
    ) -> None:
        if http is not None and transport is not None:
            raise ConfigError("pass either http or transport to MachinesClient, not both")
        raw_url = base_url if base_url is not None else os.environ.get("FLY_API_HOSTNAME")
        #: The API's base URL, without ``/v1``.
        self.base_url = _normalize_base_url(raw_url or DEFAULT_BASE_URL)
        #: Where app logs are read from (Fly's platform API, or the emulator itself).
        self.logs_url = _normalize_base_url(
            logs_url or _default_logs_url(self.base_url), setting="logs_url"
        )
        raw_token = token if token is not None else os.environ.get("FLY_API_TOKEN")
        bare_token = normalize_token(raw_token)
        #: The client-side rate limits in force (``None``: off, or only after a 429 with
        #: ``"auto"`` on a loopback host).
        self.rate_limits = _resolve_rate_limits(rate_limits, self.base_url)
        limiter = RateLimiter(self.rate_limits) if self.rate_limits is not None else None
        #: ``"auto"`` on a loopback host: a bucket is paced (as on Fly) once it drew a 429.
        self.paces_after_throttling = limiter is None and rate_limits == "auto"
        if self.paces_after_throttling:
            limiter = RateLimiter(RateLimits(), adaptive=True)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            transport=transport,
            # Waits hold a connection for up to a minute each; the caller bounds concurrency.
            # Few idle connections are kept: httpcore rescans every pooled connection at each
            # request, which cost a fan-out of 64 calls in flight a third of its CPU at 100.
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=20),
            # The client's own defaults: a request that needs no other is built without merging
            # headers or copying a timeout (see Requester).
            headers={"Authorization": authorization(bare_token)},
            timeout=timeout_s,
        )
        self._requester = Requester(
            self._http,
            base_url=self.base_url,
            token=bare_token,
            retry=retry or RetryPolicy(),
            limiter=limiter,
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, token=[redacted])"

    async def pace(self, action: str, scope: str) -> None:
        """Wait for the turn of one request for ``action`` (``"create_machine"``, ...) on
        ``scope`` (the machine id, or the app for app-wide actions) under the client's pacing,
        and take it: send that request inside `paced_already` so it does not wait again.
        Lets a caller decide what to send only once it can be sent."""
        await self._requester.pace(action, scope)

    async def pace_after_throttling(
        self, action: str, scope: str, retry_after_s: float | None = None
    ) -> None:
        """Wait, after a `RateLimitedError` for ``action`` on ``scope``, until the request may
        be sent again, and take that turn (as `pace` does): the backoff the 429 set on the
        bucket and the requests queued before it, or without pacing ``retry_after_s``
        (the error's ``Retry-After``)."""
        await self._requester.pace_after_throttling(action, scope, retry_after_s)

    @property
    def throttled_at(self) -> float | None:
        """When (``anyio.current_time()`` seconds) the API last answered 429, if ever."""
        return self._requester.throttled_at

    async def aclose(self) -> None:
        """Close the connection pool (unless it was passed in as ``http``). Idempotent."""
        self._requester.closed = True
        if self._owns_http:
            await self._http.aclose()

    def _machine_call(
        self,
        method: str,
        app: str,
        machine_id: str,
        suffix: str,
        action: str,
        *,
        safe: bool = True,
        query: Params = (),
        json: Any = None,
        nonce: str | None = None,
        with_held_nonce: bool = True,
        long_poll: bool = False,
        read_timeout_s: float | None = None,
    ) -> ApiRequest:
        """An `ApiRequest` on ``/apps/{app}/machines/{machine_id}{suffix}``, rate-limited per
        machine, carrying the lease nonce (``nonce``, else the one held in this context)."""
        nonce = nonce or (held_nonce(self, app, machine_id) if with_held_nonce else None)
        return ApiRequest(
            method,
            f"{app_path(app)}/machines/{quote_segment(machine_id)}{suffix}",
            action,
            machine_id,
            safe,
            params=query,
            json=json,
            headers={NONCE_HEADER: nonce} if nonce else {},
            long_poll=long_poll,
            read_timeout_s=read_timeout_s,
        )


@functools.lru_cache(maxsize=4096)
def quote_segment(segment: str) -> str:
    """``segment`` quoted for use as one path segment (``/`` included); cached, as the same
    app names and machine ids come back with every request."""
    return quote(segment, safe="")


def app_path(app: str) -> str:
    """The path of an app."""
    return f"/v1/apps/{quote_segment(app)}"


def without_none(**fields: Any) -> dict[str, Any]:
    """A JSON body of ``fields`` with the ``None`` ones left out."""
    return {key: value for key, value in fields.items() if value is not None}


def params(**values: str | bool | None) -> list[tuple[str, str]]:
    """Query parameters; ``None`` and ``False`` are left out, ``True`` is sent as ``true``."""
    return [
        (key, "true" if value is True else str(value))
        for key, value in values.items()
        if value is not None and value is not False
    ]


def _normalize_base_url(url: str, setting: str = "FLY_API_HOSTNAME or base_url") -> str:
    url = url.strip().rstrip("/").removesuffix("/v1")
    parts = urlsplit(url)
    try:
        port = parts.port  # raises for a port that is not a number up to 65535
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"{setting} has a bad port (use 1 to 65535): {url!r}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{setting} must be an http(s) URL, not {url!r}")
    return url


def _default_logs_url(base_url: str) -> str:
    host = urlsplit(base_url).hostname or ""
    return FLY_PLATFORM_URL if host in _FLY_MACHINES_HOSTS else base_url


def _resolve_rate_limits(setting: RateLimitSetting, base_url: str) -> RateLimits | None:
    if isinstance(setting, RateLimits):
        return setting
    choices: Mapping[str, RateLimits | None] = {"fly": RateLimits(), "off": None}
    if setting in choices:
        return choices[setting]
    if setting != "auto":
        raise ConfigError(
            f"rate_limits must be 'auto', 'fly', 'off' or a RateLimits, not {setting!r}"
        )
    return None if on_this_host(base_url) else RateLimits()


def on_this_host(url: str) -> bool:
    """Whether ``url`` names this host: ``localhost`` or a loopback address."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
