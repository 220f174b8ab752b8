"""flyjobs' pytest plugin (registered through the ``pytest11`` entry point).

It gives a user's tests a ``flyjobs_emulator`` fixture: a fresh local emulator for the test
session, with every remote call of the tests running there, whatever the user's own settings
(``FLY_API_TOKEN``, ``FLY_APP``, ``[tool.flyjobs]``) say::

    def test_square(flyjobs_emulator):
        assert square.remote(7) == 49

With ``pytest --flyjobs-fly`` the fixture uses the configured Fly app instead (the user's
settings, untouched), and tests marked ``@pytest.mark.flyjobs_fly`` run only then.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ._settings import Settings
from ._wire.seal import RESULT_KEY_ENV

__all__ = ("FlyjobsBackend",)

_APP = "flyjobs-pytest"
#: Seconds the fresh emulator lists a destroyed machine: a day, the whole test session.
_SESSION_RETENTION_S = 86_400.0


@dataclasses.dataclass(frozen=True)
class FlyjobsBackend:
    """Where the tests' remote calls run.

    :ivar url: base URL of the Machines API.
    :ivar app: the app machines are created in.
    :ivar on_fly: True with ``--flyjobs-fly``.
    """

    url: str
    app: str
    on_fly: bool
    token: str = dataclasses.field(repr=False)

    def machines(self, *, include_deleted: bool = True) -> list[dict[str, Any]]:
        """The app's machines as the API lists them (JSON objects, each with its ``state``).

        A call's machine is destroyed when the call ends, so by default the destroyed ones are
        listed too: after calls, this lists the machines they made (the fresh emulator keeps
        them listed for the whole session; Fly for a while). ``include_deleted=False`` lists
        only the machines not destroyed.
        """
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            params = {"include_deleted": "true"} if include_deleted else {}
            response = http.get(f"/v1/apps/{self.app}/machines", params=params)
            response.raise_for_status()
            machines: list[dict[str, Any]] = response.json()
            return machines


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flyjobs")
    group.addoption(
        "--flyjobs-fly",
        action="store_true",
        help="flyjobs_emulator runs remote calls on the configured Fly app (FLY_API_TOKEN, "
        "FLY_APP, FLYJOBS_IMAGE) instead of a fresh local emulator.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "flyjobs_fly: run only with --flyjobs-fly, against the configured Fly app"
    )
    if config.getoption("--flyjobs-fly"):
        _fly_settings()  # refuse at once, before any test runs


def _fly_settings() -> Settings:
    settings = Settings.load()
    if settings.embedded or not settings.app or not settings.result_key:
        raise pytest.UsageError(
            "--flyjobs-fly needs the Fly settings: FLY_API_TOKEN and FLY_APP (or `app` under"
            " [tool.flyjobs]), FLYJOBS_IMAGE, and FLYJOBS_RESULT_KEY (also an app secret)"
        )
    return settings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--flyjobs-fly"):
        return
    skip = pytest.mark.skip(reason="runs on Fly: pass --flyjobs-fly")
    for item in items:
        if item.get_closest_marker("flyjobs_fly") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def flyjobs_emulator(pytestconfig: pytest.Config) -> Iterator[FlyjobsBackend]:
    """Run the session's remote calls on a fresh local emulator (or, with ``--flyjobs-fly``,
    on the configured Fly app); yields where they run."""
    # lazy: every pytest run of a user loads the plugin
    from ._calls.runtime import shutdown_runtime

    if pytestconfig.getoption("--flyjobs-fly"):
        settings = _fly_settings()
        assert settings.api_token is not None and settings.app is not None
        shutdown_runtime()
        yield FlyjobsBackend(settings.api_hostname, settings.app, True, settings.api_token)
        shutdown_runtime()
        return
    yield from _fresh_emulator()


def _fresh_emulator() -> Iterator[FlyjobsBackend]:
    # lazy: every pytest run of a user loads the plugin
    from ._calls.runtime import EMBEDDED_IMAGE, shutdown_runtime

    # lazy: every pytest run of a user loads the plugin
    from .emulator import EmulatorConfig, serve_in_thread

    with (
        serve_in_thread(EmulatorConfig(retention_s=_SESSION_RETENTION_S)) as emulator,
        pytest.MonkeyPatch.context() as patch,
    ):
        backend = FlyjobsBackend(emulator.url, _APP, False, emulator.token)
        headers = {"Authorization": f"Bearer {emulator.token}"}
        result_key = secrets.token_urlsafe(32)
        with httpx.Client(base_url=emulator.url, headers=headers) as http:
            http.post("/v1/apps", json={"app_name": _APP, "org_slug": "personal"})
            http.post(f"/v1/apps/{_APP}/secrets/{RESULT_KEY_ENV}", json={"value": result_key})
        # The user's settings stay out: calls go to this emulator (a Fly-like API the runtime
        # did not start), and their results to an inbox on this host.
        for name, value in {
            "FLY_API_TOKEN": emulator.token,
            "FLY_API_HOSTNAME": emulator.url,
            "FLY_APP": _APP,
            "FLYJOBS_IMAGE": EMBEDDED_IMAGE,
            "FLYJOBS_INBOX_HOST": "127.0.0.1",
            "FLYJOBS_INBOX_BIND": "127.0.0.1",
            RESULT_KEY_ENV: result_key,
        }.items():
            patch.setenv(name, value)
        # Nor their object store (`fly storage create`'s BUCKET_NAME): results come to the inbox.
        for name in ("FLYJOBS_STORE", "BUCKET_NAME", "FLYJOBS_RESULTS"):
            patch.delenv(name, raising=False)
        shutdown_runtime()
        try:
            yield backend
        finally:
            shutdown_runtime()
