"""@remote with a Fly token: flyjobs talks to a Machines API it did not start (here a standalone
emulator standing in for Fly) and needs the settings a real Fly run needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
import remote_funcs as funcs
from _remote_helpers import machine_of
from _waiting import eventually

import flyjobs
from flyjobs._calls.runtime import get_runtime, shutdown_runtime
from flyjobs.emulator import RunningEmulator

APP = "flyjobs-fly-mode"
#: The app secret results are authenticated with; the caller holds the same value.
RESULT_KEY = "result-key-0123456789abcdef0123456789"
IMAGE = "registry.fly.io/flyjobs-fly-mode:latest"


def _as_fly(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningEmulator]:
    """Point flyjobs at ``emulator`` as it would be pointed at Fly, for the fixture's length."""
    for name, value in {
        "FLY_API_TOKEN": emulator.token,
        "FLY_API_HOSTNAME": emulator.url,
        "FLY_APP": APP,
        "FLYJOBS_IMAGE": IMAGE,
        # Results come back to an inbox on this host, as on a Fly machine's private address.
        "FLYJOBS_INBOX_HOST": "127.0.0.1",
        "FLYJOBS_INBOX_BIND": "127.0.0.1",
        "FLYJOBS_RESULT_KEY": RESULT_KEY,
    }.items():
        monkeypatch.setenv(name, value)
    shutdown_runtime()
    yield emulator
    shutdown_runtime()


@pytest.fixture
def fly(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningEmulator]:
    yield from _fly_app(make_emulator(), monkeypatch)


@pytest.fixture
def fly_failing_launches(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningEmulator]:
    """Fly whose machines of FLYJOBS_IMAGE fail to launch and then stay ``failed`` (Fly may
    not auto-destroy them)."""
    emulator = make_emulator(failing_images=[IMAGE], keep_failed=True)
    yield from _fly_app(emulator, monkeypatch)


def _fly_app(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningEmulator]:
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.url, headers=headers) as http:
        assert http.post("/v1/apps", json={"app_name": APP, "org_slug": "personal"}).is_success
        assert http.post(f"/v1/apps/{APP}/secrets/API_KEY", json={"value": "s3cret"}).is_success
        secret = {"value": RESULT_KEY}
        assert http.post(f"/v1/apps/{APP}/secrets/FLYJOBS_RESULT_KEY", json=secret).is_success
    yield from _as_fly(emulator, monkeypatch)


def test_calls_run_in_the_configured_app_with_its_secrets(fly: RunningEmulator) -> None:
    call = funcs.env_value.spawn("API_KEY")
    assert call.result(timeout_s=30) == "s3cret"
    assert funcs.env_value.remote("FLY_API_TOKEN") is None  # the caller's token stays here
    runtime = get_runtime()
    assert runtime.app == APP
    machine = machine_of(runtime, call.machine_id)
    assert machine.config is not None
    assert machine.config.image == "registry.fly.io/flyjobs-fly-mode:latest"
    assert machine.config.auto_destroy is True
    assert machine.config.restart is not None and machine.config.restart.policy == "no"


def test_a_machine_that_fails_to_launch_is_a_clear_error_and_is_destroyed(
    fly_failing_launches: RunningEmulator,
) -> None:
    # On Fly a launch that fails (an image it cannot pull) ends "failed", maybe not destroyed.
    call = funcs.add.with_options(timeout_s=60).spawn(1, 2)
    with pytest.raises(flyjobs.MachineCrashedError, match="failed to launch image") as exc:
        call.result(timeout_s=60)
    assert call.machine_id is not None
    assert IMAGE in str(exc.value) and call.machine_id in str(exc.value)
    runtime = get_runtime()
    machine = machine_of(runtime, call.machine_id)
    assert machine.state == "destroyed"


def test_a_missing_secret_is_named_before_any_machine(fly: RunningEmulator) -> None:
    with pytest.raises(flyjobs.ConfigError, match="DATABASE_URL") as exc:
        funcs.needs_database.remote("DATABASE_URL")
    assert "fly secrets set" in str(exc.value)
    runtime = get_runtime()
    assert runtime.portal.call(lambda: runtime.client.list_machines(APP)) == []


@pytest.mark.slow  # over a second: the slow suite
def test_a_result_key_that_is_not_the_apps_secret_says_so(
    fly: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller's key was rotated and the app secret not: machines seal with the old one.
    monkeypatch.setenv("FLYJOBS_RESULT_KEY", "a-new-key-0123456789abcdef0123456789")
    shutdown_runtime()
    call = funcs.add.with_options(retries=2).spawn(1, 2)
    with pytest.raises(flyjobs.ConfigError, match="FLYJOBS_RESULT_KEY secret") as exc:
        call.result(timeout_s=30)
    assert "fly secrets set" in str(exc.value)
    assert "a-new-key" not in str(exc.value) and RESULT_KEY not in str(exc.value)
    runtime = get_runtime()
    machines = runtime.portal.call(lambda: runtime.client.list_machines(APP, include_deleted=True))
    assert len(machines) == 1  # not retried: another machine has the same key
    assert machines[0].state == "destroyed"


def test_missing_image_names_variable_and_pyproject_key(
    fly: RunningEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv("FLYJOBS_IMAGE")
    monkeypatch.chdir(str(tmp_path))  # no pyproject.toml with an image above it
    shutdown_runtime()
    with pytest.raises(flyjobs.ConfigError, match="FLYJOBS_IMAGE") as exc:
        funcs.add.remote(1, 2)
    assert "[tool.flyjobs]" in str(exc.value)


def test_missing_app_names_variable_and_pyproject_key(
    fly: RunningEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv("FLY_APP")
    monkeypatch.chdir(str(tmp_path))
    shutdown_runtime()
    with pytest.raises(flyjobs.ConfigError, match="FLY_APP"):
        funcs.add.remote(1, 2)


def test_an_api_on_this_host_needs_no_inbox_host_nor_result_key(
    fly: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `flyjobs dev`'s machines are local processes: they reach an inbox on 127.0.0.1, and the
    # result key is the app's secret, read through the API. (Off this host, no inbox host is
    # a clear error: tests/store/test_store_config.py.)
    for var in ("FLYJOBS_INBOX_HOST", "FLYJOBS_INBOX_BIND", "FLYJOBS_RESULT_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("FLY_PRIVATE_IP", raising=False)
    shutdown_runtime()
    assert funcs.add.remote(1, 2) == 3


@pytest.mark.slow
def test_pool_limit_queues_calls_beyond_max_machines(
    fly: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYJOBS_MAX_MACHINES", "2")
    shutdown_runtime()
    calls = [funcs.slow.spawn(1.0) for _ in range(4)]

    def two_running() -> list[flyjobs.CallStatus] | None:
        statuses = [c.status for c in calls]
        return statuses if statuses.count(flyjobs.CallStatus.running) == 2 else None

    statuses = eventually(two_running, "two calls running")
    assert statuses.count(flyjobs.CallStatus.queued) == 2
    assert [c.result(timeout_s=30) for c in calls] == [1.0] * 4


@pytest.fixture
def faulty_fly(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningEmulator]:
    emulator = make_emulator(error_rate=0.15, drop_rate=0.1, latency_s=0.01, seed=7)
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.url, headers=headers) as http:
        for path, body in (
            ("/v1/apps", {"app_name": APP}),
            (f"/v1/apps/{APP}/secrets/FLYJOBS_RESULT_KEY", {"value": RESULT_KEY}),
        ):
            for _ in range(20):  # the faults apply to this setup too
                try:
                    if http.post(path, json=body).status_code in (200, 201, 422):
                        break
                except httpx.TransportError:
                    pass
    yield from _as_fly(emulator, monkeypatch)


def test_calls_survive_api_faults_without_twins_or_leftovers(faulty_fly: RunningEmulator) -> None:
    calls = [funcs.add.spawn(i, 1) for i in range(12)]
    outcomes: list[object] = []
    for call in calls:
        try:
            outcomes.append(call.result(timeout_s=60))
        except flyjobs.APIError as exc:  # a fault that outlasted the retry budget
            outcomes.append(exc)
        except flyjobs.TransportError as exc:
            outcomes.append(exc)
    values = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(values) >= 10, outcomes
    for i, outcome in enumerate(outcomes):
        if not isinstance(outcome, Exception):
            assert outcome == i + 1
    runtime = get_runtime()
    machines = runtime.portal.call(lambda: runtime.client.list_machines(APP, include_deleted=True))
    names = [m.name for m in machines]
    assert len(names) == len(set(names)), "a create was repeated into a twin"
    eventually(
        lambda: all(
            m.state == "destroyed"
            for m in runtime.portal.call(lambda: runtime.client.list_machines(APP))
        ),
        "every machine destroyed",
    )


def test_an_unknown_app_says_how_to_create_or_name_one(
    fly: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLY_APP", "no-such-app")
    shutdown_runtime()
    with pytest.raises(flyjobs.NotFoundError) as exc:
        funcs.add.remote(1, 2)
    assert any("fly apps create no-such-app" in note for note in exc.value.__notes__)


def test_a_refused_token_points_at_fly_api_token(
    fly: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", "not-the-token")
    shutdown_runtime()
    with pytest.raises(flyjobs.AuthenticationError) as exc:
        funcs.add.remote(1, 2)
    assert any("FLY_API_TOKEN" in note for note in exc.value.__notes__)
    assert "not-the-token" not in str(exc.value) + "".join(exc.value.__notes__)
