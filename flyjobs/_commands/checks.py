"""`flyjobs doctor`'s checks: each setting a remote call needs, passed or failed with its fix."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Sequence

from .._exceptions import (
    APIError,
    AuthenticationError,
    ConfigError,
    ForbiddenError,
    NotFoundError,
    TransportError,
)
from .._results.channel import choose_channel
from .._results.store import StoreConfig
from .._settings import Settings
from .._wire.seal import RESULT_KEY_ENV
from ..machines import MachinesClient

__all__ = ("Check", "diagnose")


@dataclasses.dataclass(frozen=True)
class Check:
    """One check's outcome: ``fix`` says what to do when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


async def diagnose(settings: Settings, *, secrets: Sequence[str] = ()) -> list[Check]:
    """Check ``settings`` against the Machines API they name; ``secrets`` are secret names the
    app must have. Never raises for a failed check: each becomes a failed `Check`."""
    if settings.embedded:
        return [
            Check(
                "back end",
                True,
                "no FLY_API_TOKEN: calls run on the embedded local emulator (nothing else to"
                " check; set FLY_API_TOKEN, or export what `flyjobs dev` prints, to check Fly)",
            )
        ]
    checks = [_image(settings), _inbox(settings)]
    try:
        client = MachinesClient(token=settings.api_token, base_url=settings.api_hostname)
    except ConfigError as exc:
        return [Check("api", False, str(exc), "set FLY_API_HOSTNAME to an http(s) URL"), *checks]
    async with client:
        checks[:0] = await _api_checks(client, settings, secrets)
        checks.append(_rate_limits(client))
    return checks


async def _api_checks(
    client: MachinesClient, settings: Settings, secrets: Sequence[str]
) -> list[Check]:
    api = client.base_url
    app = settings.app
    try:
        if app:
            await client.get_app(app)
        else:
            await client.list_apps()
    except NotFoundError:
        pass  # the token was accepted; the app check below says the rest
    except (AuthenticationError, ForbiddenError) as exc:
        return [
            Check(
                "token",
                False,
                f"{api} refused FLY_API_TOKEN (HTTP {exc.status_code})",
                "set FLY_API_TOKEN to a valid token (`fly tokens create deploy -a APP`)",
            )  # fmt: skip
        ]
    except (APIError, TransportError) as exc:
        fix = "check FLY_API_HOSTNAME (Fly: https://api.machines.dev)"
        return [Check("api", False, f"{api} did not answer: {exc}", fix)]
    checks = [Check("token", True, f"accepted by {api}")]
    if not app:
        fix = "set FLY_APP, or `app = ...` under [tool.flyjobs] in pyproject.toml"
        return [*checks, Check("app", False, "no app configured", fix)]
    try:
        await client.get_app(app)
    except NotFoundError:
        fix = f"create it (`fly apps create {app}`) or name another with FLY_APP"
        return [*checks, Check("app", False, f"no app {app!r} at {api}", fix)]
    checks.append(Check("app", True, f"{app!r} exists"))
    # With `flyjobs dev` and no exported key, calls read the app's key or set one themselves.
    own_key = [] if settings.local_api and not settings.result_key else [RESULT_KEY_ENV]
    checks.append(await _secrets(client, app, [*secrets, *own_key], local=settings.local_api))
    checks.append(await _logs(client, app))
    return checks


async def _secrets(
    client: MachinesClient, app: str, wanted: Sequence[str], *, local: bool
) -> Check:
    try:
        names = sorted(s.name for s in await client.list_secrets(app))
    except (APIError, TransportError) as exc:
        return Check("secrets", False, f"cannot list the secrets of {app!r}: {exc}",
                     "use a token allowed to read the app's secrets")  # fmt: skip
    missing = [n for n in wanted if n not in names]
    if missing:
        fix = " ; ".join(
            _set_through_api(client.base_url, app, n)
            if local
            else f"fly secrets set {n}=... -a {app}"
            for n in missing
        )
        return Check("secrets", False, f"{app!r} lacks {', '.join(missing)}", fix)
    shown = ", ".join(names) if names else "none"
    return Check("secrets", True, f"{len(names)} set ({shown})")


def _set_through_api(api: str, app: str, name: str) -> str:
    """The command that sets secret ``name`` of ``app`` on the Machines API at ``api`` (the
    local emulator, which no ``fly secrets`` reaches)."""
    value = f"${RESULT_KEY_ENV}" if name == RESULT_KEY_ENV else "..."
    return (
        f'curl -X POST -H "Authorization: Bearer $FLY_API_TOKEN"'
        f" {api.rstrip('/')}/v1/apps/{app}/secrets/{name}"
        f' -d "{{\\"value\\": \\"{value}\\"}}"'
    )


async def _logs(client: MachinesClient, app: str) -> Check:
    try:
        await client.get_logs(app)
    except (APIError, TransportError) as exc:
        return Check(
            "logs", False, f"the logs API at {client.logs_url} failed: {exc}",
            "live output and `flyjobs logs` need a token that may read the app's logs",
        )  # fmt: skip
    return Check("logs", True, f"readable at {client.logs_url}")


def _image(settings: Settings) -> Check:
    if settings.image:
        return Check("image", True, settings.image)
    return Check(
        "image", False, "no image configured",
        "build and push the image (see the Dockerfile), then set FLYJOBS_IMAGE or"
        " `image = ...` under [tool.flyjobs]",
    )  # fmt: skip


def _inbox(settings: Settings) -> Check:
    if not settings.result_key and not settings.local_api:
        return Check(
            "results", False, f"{RESULT_KEY_ENV} is not set, so no result could be trusted",
            f"generate a key, set it as an app secret (`fly secrets set {RESULT_KEY_ENV}=...`)"
            " and export the same value here",
        )  # fmt: skip
    try:
        store = StoreConfig.load(settings.store, embedded=settings.embedded)
        channel = choose_channel(settings, has_store=store is not None)
    except ConfigError as exc:
        return Check("results", False, "machines have no way to deliver results", str(exc))
    if channel.uses_store:
        assert store is not None
        where = f"{store.url} ({store.endpoint})"
        return Check("results", True, f"results come back through the object store {where}")
    bind, advertise = channel.bind, channel.advertise
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((bind, 0))
    except OSError as exc:
        return Check("results", False, f"the inbox cannot listen on {bind}: {exc}",
                     "set FLYJOBS_INBOX_BIND to an address of this host")  # fmt: skip
    key = (
        f"; the result key is the app's {RESULT_KEY_ENV} secret, read (or set) through the API"
        " on this host"
        if not settings.result_key
        else ""
    )
    return Check("results", True, f"inbox listens on {bind}, machines reach it at {advertise}{key}")


def _rate_limits(client: MachinesClient) -> Check:
    limits = client.rate_limits
    if limits is None:
        if client.paces_after_throttling:
            what = "client pacing starts at the API's first 429 (the API is on this host)"
        else:
            what = "client pacing off"
        return Check("rate limits", True, what)
    rate = limits.default
    return Check(
        "rate limits", True,
        f"client paces requests to Fly's limits ({rate.per_s:g}/s per action, burst {rate.burst})",
    )  # fmt: skip
