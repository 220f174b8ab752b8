"""A standalone emulator set up as Fly would be (an app, the settings that point flyjobs at it)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from flyjobs._calls.runtime import shutdown_runtime
from flyjobs.emulator import RunningEmulator

APP = "flyjobs-tools"
#: The app secret results are authenticated with; the caller holds the same value.
RESULT_KEY = "tools-result-key-0123456789abcdef"


def fly_env(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Create app APP on ``emulator`` and point this process's runtime at it as at Fly; yield
    the settings as an environment for subprocesses."""
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.url, headers=headers) as http:
        assert http.post("/v1/apps", json={"app_name": APP, "org_slug": "personal"}).is_success
        secret = {"value": RESULT_KEY}
        assert http.post(f"/v1/apps/{APP}/secrets/FLYJOBS_RESULT_KEY", json=secret).is_success
    env = {
        "FLY_API_TOKEN": emulator.token,
        "FLY_API_HOSTNAME": emulator.url,
        "FLY_APP": APP,
        "FLYJOBS_IMAGE": f"registry.fly.io/{APP}:latest",
        "FLYJOBS_INBOX_HOST": "127.0.0.1",
        "FLYJOBS_INBOX_BIND": "127.0.0.1",
        "FLYJOBS_RESULT_KEY": RESULT_KEY,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    shutdown_runtime()
    yield env
    shutdown_runtime()
