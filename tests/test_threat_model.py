"""docs/threat-model.md, line by line, played as the attacks they are.

The Fly-mode attacks run against ``flyjobs dev`` as a separate process standing in for Fly:
the attacker holds a token that reads the app's machines, so it sees every config, and with it
each call's signed result URL.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attack_funcs as attack
import httpx
import misuse_funcs
import msgpack  # type: ignore[import-untyped]
import pytest
from _waiting import eventually

import flyjobs
from flyjobs._calls.runtime import get_runtime, shutdown_runtime
from flyjobs._settings import Settings

APP = "flyjobs-threats"
TOKEN = "threat-model-token-0123456789"
RESULT_KEY = "threat-model-result-key-0123456789abcdef"


@pytest.fixture
def dev_url() -> Iterator[str]:
    """``flyjobs dev`` as its own process; its URL. Its environment holds no result key."""
    env = {k: v for k, v in os.environ.items() if k not in ("FLY_API_TOKEN", "FLYJOBS_RESULT_KEY")}
    process = subprocess.Popen(
        [sys.executable, "-m", "flyjobs", "dev", "--port", "0", "--token", TOKEN],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    with process, process.stdout:
        try:
            line = process.stdout.readline()
            assert "listening on " in line, line
            yield line.rsplit("listening on ", 1)[1].split()[0]
        finally:
            process.terminate()
            process.wait(30)


@pytest.fixture
def api(dev_url: str) -> Iterator[httpx.Client]:
    """The Machines API as the attacker (and the app's owner) reach it."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=dev_url, headers=headers, timeout=30) as client:
        assert client.post("/v1/apps", json={"app_name": APP, "org_slug": "personal"}).is_success
        yield client


@pytest.fixture
def fly(api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    """flyjobs in Fly mode against ``flyjobs dev``, the app holding the result key secret."""
    secret = {"value": RESULT_KEY}
    assert api.post(f"/v1/apps/{APP}/secrets/FLYJOBS_RESULT_KEY", json=secret).is_success
    _fly_env(monkeypatch, str(api.base_url).rstrip("/"), result_key=RESULT_KEY)
    shutdown_runtime()
    yield api
    shutdown_runtime()


def _fly_env(monkeypatch: pytest.MonkeyPatch, url: str, *, result_key: str | None) -> None:
    for name, value in {
        "FLY_API_TOKEN": TOKEN,
        "FLY_API_HOSTNAME": url,
        "FLY_APP": APP,
        "FLYJOBS_IMAGE": "registry.fly.io/flyjobs-threats:latest",
        "FLYJOBS_INBOX_HOST": "127.0.0.1",
    }.items():
        monkeypatch.setenv(name, value)
    if result_key is None:
        monkeypatch.delenv("FLYJOBS_RESULT_KEY", raising=False)
    else:
        monkeypatch.setenv("FLYJOBS_RESULT_KEY", result_key)


def _read_call(api: httpx.Client, call: flyjobs.Call[Any]) -> dict[str, Any]:
    """What a reader of the app's machines learns: the call envelope in the machine's config."""
    machine_id = eventually(lambda: call.machine_id, "the call got a machine")
    machine = api.get(f"/v1/apps/{APP}/machines/{machine_id}").json()
    raw = machine["config"]["files"][0]["raw_value"]
    envelope: dict[str, Any] = msgpack.unpackb(base64.b64decode(raw), raw=False)
    return envelope


@pytest.mark.parametrize("kind", ["pickle", "import"])
def test_a_config_reader_cannot_deliver_a_result(
    fly: httpx.Client, tmp_path: Path, kind: str
) -> None:
    """Threat model, Machines API reader: with the result URL from the config, a forged result
    (claiming pickle, or naming a module to import) delivered first is refused, runs nothing,
    and the caller gets the real value."""
    marker, go = tmp_path / "pwned", tmp_path / "go"
    call = attack.wait_for_file.spawn(str(go))
    envelope = _read_call(fly, call)
    forged = attack.forged_envelope(envelope, kind, str(marker))
    answer = httpx.put(envelope["result_url"], content=forged, timeout=10)
    go.touch()
    assert answer.status_code == 403
    assert call.result(timeout_s=30) == "REAL"
    assert not marker.exists()
    assert "import_side_effect" not in sys.modules


def test_a_config_reader_cannot_guess_the_mac_from_what_it_sees(
    fly: httpx.Client, tmp_path: Path
) -> None:
    """The MAC is keyed by the app secret, not by anything in the config: a MAC made from the
    config's own values is refused too."""
    go = tmp_path / "go"
    call = attack.wait_for_file.spawn(str(go))
    envelope = _read_call(fly, call)
    forged = attack.forged_envelope(envelope, "import", str(tmp_path / "m"))
    from flyjobs._wire.seal import seal_result, ticket_id

    guesses = [envelope["result_url"], envelope["call_id"], TOKEN, ""]
    for guess in guesses:
        sealed = seal_result(guess, forged, ticket=ticket_id(envelope["result_url"]))
        answer = httpx.put(envelope["result_url"], content=sealed, timeout=10)
        assert answer.status_code == 403, guess
    go.touch()
    assert call.result(timeout_s=30) == "REAL"


def test_the_machine_config_holds_no_result_key(fly: httpx.Client) -> None:
    """Threat model: the key reaches machines only as an app secret, which neither a machine's
    config nor the app's secrets list shows."""
    call = attack.nothing.spawn()
    assert call.result(timeout_s=30) is None
    machine = fly.get(f"/v1/apps/{APP}/machines/{call.machine_id}").json()
    assert RESULT_KEY not in str(machine)
    secrets = fly.get(f"/v1/apps/{APP}/secrets").json()
    assert RESULT_KEY not in str(secrets)


def test_fly_mode_without_a_result_key_is_refused_before_any_machine(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threat model: without the key, nothing could tell a forged result from a real one, so
    flyjobs does not run on Fly at all. (An API on this host, `flyjobs dev`, is the exception:
    its machines are local processes, and the app's key is read through it.)"""
    _fly_env(monkeypatch, "http://10.0.0.9:4280", result_key=None)  # refused before it is asked
    shutdown_runtime()
    try:
        with pytest.raises(flyjobs.ConfigError, match="FLYJOBS_RESULT_KEY") as exc:
            attack.nothing.remote()
        assert "fly secrets set FLYJOBS_RESULT_KEY" in str(exc.value)
        assert api.get(f"/v1/apps/{APP}/machines").json() == []
    finally:
        shutdown_runtime()


def test_an_app_without_the_result_key_secret_is_refused_before_any_machine(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fly_env(monkeypatch, str(api.base_url).rstrip("/"), result_key=RESULT_KEY)
    shutdown_runtime()
    try:
        with pytest.raises(flyjobs.ConfigError, match="no secret FLYJOBS_RESULT_KEY"):
            attack.nothing.remote()
        assert api.get(f"/v1/apps/{APP}/machines").json() == []
    finally:
        shutdown_runtime()


def test_the_key_is_in_no_repr(fly: httpx.Client) -> None:
    runtime = get_runtime()
    shown = repr(runtime) + repr(runtime.settings) + repr(runtime.inbox)
    assert RESULT_KEY not in shown
    assert RESULT_KEY not in repr(Settings.load())


@pytest.mark.usefixtures("runtime", "no_machine_left")
@pytest.mark.parametrize("kind", ["pickle", "import"])
def test_code_on_a_machine_cannot_make_the_caller_unpickle_or_import(
    tmp_path: Path, kind: str
) -> None:
    """Threat model, code on a machine (it holds the app's secrets, so its results are
    authentic): the caller still decodes by the call's own options (no pickle for a call that
    did not opt in) and imports no module the result names."""
    marker = tmp_path / "pwned"
    with pytest.raises(flyjobs.SerializationError):
        attack.deliver_forged_result.remote(kind, str(marker))
    assert not marker.exists()
    assert "import_side_effect" not in sys.modules


def test_a_remote_call_made_on_a_machine_runs_in_its_app(fly: httpx.Client) -> None:
    """Calls: on a machine, flyjobs calls on into the machine's own app and image, with
    FLY_API_TOKEN (and the result key) from the app's secrets; no emulator starts there."""
    url = str(fly.base_url).rstrip("/")
    for name, value in {
        "FLY_API_TOKEN": TOKEN,
        "FLY_API_HOSTNAME": url,  # on Fly, _api.internal:4280 is the default
        "FLYJOBS_INBOX_HOST": "127.0.0.1",
    }.items():
        assert fly.post(f"/v1/apps/{APP}/secrets/{name}", json={"value": value}).is_success
    assert misuse_funcs.nested.remote(41) == 42
    machines = fly.get(f"/v1/apps/{APP}/machines", params={"include_deleted": "true"}).json()
    assert len(machines) == 2
    images = {m["config"]["image"] for m in machines}
    assert images == {"registry.fly.io/flyjobs-threats:latest"}
