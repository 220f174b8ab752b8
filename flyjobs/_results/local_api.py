"""A Machines API on this host (``flyjobs dev``): its app's result key, without being told.

On Fly, the caller and the app's machines share ``FLYJOBS_RESULT_KEY`` (an app secret, and the
same value exported where the caller runs). With an API on a loopback address
(`flyjobs._settings.Settings.local_api`) the machines are local processes of the same user,
and the token that may call the API may read the app's secrets: the key is the app's
``FLYJOBS_RESULT_KEY`` secret, read through the API, or a fresh random one set as that secret
when the app has none (as the embedded emulator does for its own app). An exported
``FLYJOBS_RESULT_KEY`` always wins.
"""

from __future__ import annotations

import secrets

from .._settings import Settings
from .._wire.seal import RESULT_KEY_ENV
from ..machines import MachinesClient

__all__ = ("app_result_key",)


async def app_result_key(settings: Settings, client: MachinesClient, app: str) -> str | None:
    """The result key calls of ``app`` use: ``FLYJOBS_RESULT_KEY`` if set; else, with an API
    on this host, the app's secret of that name (set to a fresh key if it has none); else None.

    :raises APIError: the API refused to read or set the app's secrets.
    """
    if settings.result_key or not settings.local_api:
        return settings.result_key
    for secret in await client.list_secrets(app, show_values=True):
        if secret.name == RESULT_KEY_ENV and secret.value is not None:
            return secret.value.get_secret_value()
    await client.set_secret(app, RESULT_KEY_ENV, secrets.token_urlsafe(32))
    # Read back: of two callers setting one at once, the one stored is the one machines see.
    for secret in await client.list_secrets(app, show_values=True):
        if secret.name == RESULT_KEY_ENV and secret.value is not None:
            return secret.value.get_secret_value()
    return None
