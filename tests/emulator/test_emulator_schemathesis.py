"""Property-based fuzzing of the emulator from Fly's spec (schemathesis): whatever a client
sends, the emulator never answers 5xx, and no machine is left in ``starting``.

Bounded (about two minutes): a fixed number of cases in all. Path parameters are pointed
at a real app and its machines, so the cases reach the handlers instead of stopping at 404.
Commands are prefixed with ``echo`` so that no generated string is run as a program: what is
fuzzed is the emulator's handling of argv, not the host.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from _emu_helpers import sync_client
from _spec import spec_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from flyjobs.emulator import RunningEmulator

# A fixed number of cases, each bounded; the whole run takes a minute or two on a loaded
# machine, more than the suite's per-test timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

APP = "fuzzed-app"
#: Machines kept alive at most (each runs a stand-in process); older ones are force-deleted.
_MAX_LIVE = 8
#: The operations the emulator serves: apps, their secrets and machines.
_EMULATED = r"^/v1/apps(/\{app_name\}(/machines.*|/secrets.*)?)?$"
#: Cases in all, spread over the spec's operations, valid and invalid.
_EXAMPLES = 1500


@pytest.fixture
def fuzz_target(make_emulator: Callable[..., RunningEmulator]) -> Iterator[RunningEmulator]:
    emu = make_emulator(log_max_bytes=64 * 1024, retention_s=30.0)
    yield emu
    with sync_client(emu) as client:
        stuck = _machines_in(client, "starting")
    assert stuck == [], "machines left in starting"


_turn = itertools.count()
#: Every app name a case used or created, checked for stuck machines at the end.
_apps_seen: set[str] = {APP}


def test_no_request_gets_a_server_error(fuzz_target: RunningEmulator) -> None:
    schema = schemathesis.openapi.from_path(str(spec_path())).include(path_regex=_EMULATED)
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )
    auth = {"Authorization": f"Bearer {fuzz_target.token}"}

    with httpx.Client(base_url=fuzz_target.url, headers=auth, timeout=70) as client:

        @given(case=cases)
        @settings(
            max_examples=_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def one_case(case: Any) -> None:
            _aim_at_real_objects(case, client)
            _make_commands_harmless(case)
            _shorten_waits(case)
            case.headers = {**(case.headers or {}), **auth}
            response = case.call(base_url=fuzz_target.url, timeout=70)
            case.validate_response(response, checks=[not_a_server_error])
            _keep_few_machines(client)

        one_case()


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "A=B", "a\x00b", "PATH", "FLYJOBS_MACHINE_ROOT", "FLY_REGION", "x" * 300]
)
_PATHS = st.lists(st.sampled_from(["f", "g", "..", ".", "", "x" * 300, "a\x00"]), max_size=3)
_CONFIGS = st.fixed_dictionaries(
    {"image": _TEXT},
    optional={
        "env": st.dictionaries(_TEXT, _TEXT, max_size=3),
        "metadata": st.dictionaries(_TEXT, _TEXT, max_size=2),
        "init": st.fixed_dictionaries({"exec": st.lists(_TEXT, max_size=3)}),
        "processes": st.lists(
            st.fixed_dictionaries(
                {"exec": st.lists(_TEXT, max_size=2)},
                optional={"env": st.dictionaries(_TEXT, _TEXT, max_size=2)},
            ),
            max_size=2,
        ),
        "files": st.lists(
            st.fixed_dictionaries(
                {"guest_path": _PATHS.map(lambda parts: "/" + "/".join(parts))},
                optional={"raw_value": st.sampled_from(["eA==", "", "%%", "eA"])},
            ),
            max_size=3,
        ),
        "restart": st.fixed_dictionaries({"policy": st.sampled_from(["no", "on-failure"])}),
        "auto_destroy": st.booleans(),
    },
)


def test_hostile_machine_configs_never_wedge_a_machine(fuzz_target: RunningEmulator) -> None:
    """Creates with the values that once wedged machines (NUL, '=', reserved names, /f plus
    /f/g, long names), mixed at random: each is a 400 or a machine that settles."""
    auth = {"Authorization": f"Bearer {fuzz_target.token}"}
    with httpx.Client(base_url=fuzz_target.url, headers=auth, timeout=70) as client:
        client.post("/v1/apps", json={"app_name": APP, "org_slug": "personal"})

        @given(
            config=_CONFIGS,
            region=st.none() | _TEXT,
            secrets=st.dictionaries(_TEXT, _TEXT, max_size=2),
        )
        @settings(max_examples=_EXAMPLES // 5, deadline=None, database=None)
        def one_create(config: dict[str, Any], region: str | None, secrets: dict[str, str]) -> None:
            answer = client.post(f"/v1/apps/{APP}/secrets", json={"values": secrets})
            assert answer.status_code < 500, answer.text
            body: dict[str, Any] = {"config": _harmless(config), "region": region}
            answer = client.post(f"/v1/apps/{APP}/machines", json=body)
            assert answer.status_code in (200, 400), answer.text
            if answer.status_code == 200:
                machine_id = answer.json()["id"]
                launched = client.get(
                    f"/v1/apps/{APP}/machines/{machine_id}/wait",
                    params={"state": "started,stopped,failed,destroyed", "timeout": 10},
                )
                assert launched.status_code == 200, f"stuck in starting: {body!r}"
            _keep_few_machines(client)

        one_create()


def _harmless(config: dict[str, Any]) -> dict[str, Any]:
    for spec in [config.get("init"), *(config.get("processes") or [])]:
        if spec and spec.get("exec"):
            spec["exec"] = ["echo", *spec["exec"]]
    return config


def _aim_at_real_objects(case: Any, client: httpx.Client) -> None:
    params = case.path_parameters or {}
    if isinstance(case.body, dict):
        _apps_seen.update(str(case.body[key]) for key in ("app_name", "name") if case.body.get(key))
    if "app_name" not in params:
        return
    if client.get(f"/v1/apps/{APP}").status_code == 404:
        client.post("/v1/apps", json={"app_name": APP, "org_slug": "personal"})
        client.post(f"/v1/apps/{APP}/machines", json={"config": {"image": "img"}})
        client.post(
            f"/v1/apps/{APP}/machines", json={"config": {"image": "img"}, "skip_launch": True}
        )
    turn = next(_turn)
    if turn % 8:  # most cases hit the real app; some keep their generated name
        params["app_name"] = APP
    _apps_seen.add(str(params["app_name"]))
    if "machine_id" in params and turn % 8:
        machines = client.get(f"/v1/apps/{APP}/machines", params={"include_deleted": "true"})
        ids = [m["id"] for m in machines.json()] if machines.status_code == 200 else []
        if ids:
            params["machine_id"] = ids[turn % len(ids)]


def _make_commands_harmless(case: Any) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("command"), list):
        body["command"] = ["echo", *body["command"]]
    if isinstance(body.get("cmd"), str):
        body["cmd"] = "echo " + body["cmd"]
    config = body.get("config")
    if not isinstance(config, dict):
        return
    specs = [config.get("init")] + list(config.get("processes") or [])
    for spec in specs:
        if isinstance(spec, dict):
            for key in ("exec", "entrypoint"):
                if isinstance(spec.get(key), list):
                    spec[key] = ["echo", *spec[key]]
            if isinstance(spec.get("cmd"), list) and not spec.get("entrypoint"):
                spec["entrypoint"] = ["echo"]


def _shorten_waits(case: Any) -> None:
    # A valid wait may block for its whole timeout (up to 60 s): keep the run short.
    query = case.query
    if case.operation.path.endswith("/wait") and isinstance(query, dict):
        timeout = str(query.get("timeout", "60"))
        if timeout.isdigit() and int(timeout) > 1:
            query["timeout"] = 1


def _keep_few_machines(client: httpx.Client) -> None:
    machines = client.get(f"/v1/apps/{APP}/machines")
    if machines.status_code != 200:
        return
    live = [m["id"] for m in machines.json() if m["state"] != "destroyed"]
    for machine_id in live[: max(0, len(live) - _MAX_LIVE)]:
        client.delete(f"/v1/apps/{APP}/machines/{machine_id}", params={"force": "true"})


def _machines_in(client: httpx.Client, state: str) -> list[str]:
    """Ids of machines of every app in ``state``, after giving each a moment to settle."""
    stuck = []
    for name in sorted(_apps_seen):
        app = quote(name, safe="")
        listed = client.get(f"/v1/apps/{app}/machines")
        if listed.status_code != 200:
            continue
        for machine in listed.json():
            if machine["state"] != state:
                continue
            settled = client.get(
                f"/v1/apps/{app}/machines/{machine['id']}/wait",
                params={"state": "settled", "timeout": 10},
            )
            if settled.status_code == 408:
                stuck.append(machine["id"])
    return stuck
