"""flyjobs' own servers and HTTP client stay out of the host program's log.

A web app under ``logging.basicConfig(level=INFO)`` saw the embedded emulator's uvicorn log a
second ``Started server process`` and one httpx ``HTTP Request`` line per API request flyjobs
made; and the emulator's start turned off the app's own uvicorn access log."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
import remote_funcs as funcs

from flyjobs._calls.runtime import Runtime
from flyjobs.emulator import EmulatorConfig, serve_in_thread

TOKEN = "quiet-token-0123456789"
THIRD_PARTY = ("uvicorn", "httpx")


def _third_party(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(THIRD_PARTY)]


@pytest.fixture
def host_access_log() -> Iterator[logging.Handler]:
    """The host's uvicorn access log, as its own uvicorn configures it."""
    access = logging.getLogger("uvicorn.access")
    saved = (access.handlers[:], access.propagate)
    handler = logging.NullHandler()
    access.handlers, access.propagate = [handler], True
    yield handler
    access.handlers, access.propagate = saved


def test_the_embedded_emulator_logs_nothing_into_the_host_log(
    caplog: pytest.LogCaptureFixture, host_access_log: logging.Handler
) -> None:
    caplog.set_level(logging.INFO)
    with serve_in_thread(EmulatorConfig(tokens=[TOKEN])) as emulator:
        # The host's own request through httpx: its log line is the host's, and stays.
        httpx.get(f"{emulator.url}/v1/apps", headers={"Authorization": f"Bearer {TOKEN}"})
    assert [m for m in _third_party(caplog) if "HTTP Request" not in m] == []
    assert len(_third_party(caplog)) == 1
    access = logging.getLogger("uvicorn.access")
    assert (access.handlers, access.propagate) == ([host_access_log], True)


def test_the_runtime_s_api_requests_are_not_logged_at_info(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert funcs.add.remote(2, 3) == 5
    assert _third_party(caplog) == []


def test_flyjobs_emulator_log_keeps_the_emulator_s_log(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    host_access_log: logging.Handler,
) -> None:
    monkeypatch.setenv("FLYJOBS_EMULATOR_LOG", "1")
    caplog.set_level(logging.INFO)
    with serve_in_thread(EmulatorConfig(tokens=[TOKEN])) as emulator:
        httpx.get(f"{emulator.url}/v1/apps", headers={"Authorization": f"Bearer {TOKEN}"})
    shown = [r.getMessage() for r in caplog.records if r.name.startswith("flyjobs.emulator")]
    assert any("the emulator serves the Machines API at" in m for m in shown)
    assert any('"GET /v1/apps HTTP/1.1"' in m for m in shown)  # its access log
