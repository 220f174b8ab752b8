"""The pytest plugin, as a user meets it: their own test file, run by pytest in a subprocess."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

import httpx
import pytest

from flyjobs.emulator import RunningEmulator

pytest_plugins = ["pytester"]

USER_MODULE = """
import os
import flyjobs

@flyjobs.remote(timeout_s=60)
def square(x):
    return x * x

@flyjobs.remote(timeout_s=60)
def where():
    return os.environ.get("FLY_APP_NAME")
"""

USER_TESTS = """
import pytest
from jobs import square, where

def test_square(flyjobs_emulator):
    assert square.remote(7) == 49

def test_runs_in_the_backend_app(flyjobs_emulator):
    assert where.remote() == flyjobs_emulator.app
    made = flyjobs_emulator.machines()  # destroyed once their calls ended, and listed
    assert len(made) >= 2 and all(m["state"] for m in made)
    assert all(m["state"] != "destroyed" for m in flyjobs_emulator.machines(include_deleted=False))

@pytest.mark.flyjobs_fly
def test_only_on_fly(flyjobs_emulator):
    assert flyjobs_emulator.on_fly
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project whose settings point at a Fly app that must never be reached."""
    if not importlib.metadata.entry_points(group="pytest11", name="flyjobs"):
        pytest.skip("flyjobs is installed without its pytest11 entry point: pip install -e .")
    pytester.makepyfile(jobs=USER_MODULE, test_user=USER_TESTS)
    pytester.makepyprojecttoml('[tool.flyjobs]\napp = "users-real-app"\nimage = "users/image"\n')
    pytester.syspathinsert()
    return pytester


@pytest.mark.slow  # several seconds: run in the slow suite
def test_the_fixture_runs_calls_on_a_fresh_emulator(
    user_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", "the-users-real-token")
    monkeypatch.setenv("FLY_API_HOSTNAME", "http://127.0.0.1:9")  # Fly, unreachable here
    monkeypatch.setenv("FLY_APP", "users-real-app")
    monkeypatch.setenv("BUCKET_NAME", "users-real-bucket")  # no credentials: never reached
    result = user_project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=1)


@pytest.mark.slow
def test_flyjobs_fly_uses_the_configured_app(
    user_project: pytest.Pytester,
    make_emulator: Callable[..., RunningEmulator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fly = make_emulator()  # stands in for Fly
    headers = {"Authorization": f"Bearer {fly.token}"}
    with httpx.Client(base_url=fly.url, headers=headers) as http:
        assert http.post("/v1/apps", json={"app_name": "users-real-app"}).is_success
        secret = {"value": "users-result-key"}
        path = "/v1/apps/users-real-app/secrets/FLYJOBS_RESULT_KEY"
        assert http.post(path, json=secret).is_success
    for name, value in {
        "FLY_API_TOKEN": fly.token,
        "FLY_API_HOSTNAME": fly.url,
        "FLYJOBS_INBOX_HOST": "127.0.0.1",
        "FLYJOBS_INBOX_BIND": "127.0.0.1",
        "FLYJOBS_RESULT_KEY": "users-result-key",
    }.items():
        monkeypatch.setenv(name, value)
    result = user_project.runpytest_subprocess("-p", "no:cacheprovider", "--flyjobs-fly")
    result.assert_outcomes(passed=3)
    with httpx.Client(base_url=fly.url, headers=headers) as http:
        machines = http.get("/v1/apps/users-real-app/machines", params={"include_deleted": "true"})
    assert len(machines.json()) == 2


@pytest.mark.slow
def test_flyjobs_fly_without_settings_is_a_usage_error(
    user_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)
    result = user_project.runpytest_subprocess("-p", "no:cacheprovider", "--flyjobs-fly")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--flyjobs-fly needs the Fly settings*"])
