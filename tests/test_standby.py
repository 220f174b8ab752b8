"""Standby machines (``flyjobs standby``): made stopped ahead of time, claimed by maps under their
lease, started at once, and given back at rest however the map ends; ``flyjobs gc`` recovers
those of a caller that died. Against a standalone emulator standing in for Fly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import standby_funcs
from _fly_helpers import APP, fly_env
from _waiting import eventually

from flyjobs import ConfigError, Pool
from flyjobs._standby.fleet import create_standbys
from flyjobs.emulator import RunningEmulator
from flyjobs.machines import MachinesClient

SUPPORT = Path(__file__).resolve().parent / "_support"
TARGET = "standby_funcs.py::machine_of"


@pytest.fixture
def fly(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    yield from fly_env(make_emulator(), monkeypatch)


def flyjobs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``flyjobs ARGS...`` in a fresh process with ``env`` as its whole flyjobs setting."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    return subprocess.run(
        [sys.executable, "-m", "flyjobs", *args],
        env={**base, **env},
        cwd=SUPPORT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _api(env: dict[str, str]) -> httpx.Client:
    headers = {"Authorization": f"Bearer {env['FLY_API_TOKEN']}"}
    return httpx.Client(base_url=env["FLY_API_HOSTNAME"], headers=headers, timeout=30)


def _machines(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    with _api(env) as http:
        return {m["id"]: m for m in http.get(f"/v1/apps/{APP}/machines").json()}


def _leased(env: dict[str, str], machine_id: str) -> bool:
    with _api(env) as http:
        return http.get(f"/v1/apps/{APP}/machines/{machine_id}/lease").status_code == 200


def _make_standbys(env: dict[str, str], count: int) -> list[str]:
    """``count`` standbys of `standby_funcs.machine_of`'s shape, made as `flyjobs standby
    create --function` makes them (in this process: a command costs a second to start)."""
    options = standby_funcs.machine_of.options
    client = MachinesClient(token=env["FLY_API_TOKEN"], base_url=env["FLY_API_HOSTNAME"])

    async def make() -> list[str]:
        async with client:
            image = env["FLYJOBS_IMAGE"]
            return await create_standbys(client, APP, options, image=image, count=count)

    return anyio.run(make)


def _assert_at_rest(env: dict[str, str], ids: list[str]) -> None:
    """Every standby of ``ids`` is stopped (or never booted), with its resting config (no call
    in it), and no lease held on it."""
    machines = _machines(env)
    for machine_id in ids:
        machine = machines[machine_id]
        assert machine["state"] in ("created", "stopped"), (machine_id, machine["state"])
        config = machine["config"]
        assert not config.get("files"), machine_id
        assert set(config["metadata"]) == {"flyjobs_standby", "flyjobs_standby_image"}
        assert not _leased(env, machine_id), machine_id


@pytest.mark.slow
def test_standby_create_ls_rm(fly: dict[str, str]) -> None:
    made = flyjobs("standby", "create", "--count", "2", "--function", TARGET, env=fly)
    assert made.returncode == 0, made.stderr
    ids = made.stdout.split()
    assert len(ids) == 2
    _assert_at_rest(fly, ids)
    listed = flyjobs("standby", "ls", "--json", env=fly)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(row["id"] for row in rows) == sorted(ids)
    assert {row["shape"] for row in rows} == {"shared-1x-256mb"}
    assert "standby" not in flyjobs("ls", env=fly).stdout  # not calls: `flyjobs ls` skips them
    removed = flyjobs("standby", "rm", ids[0], env=fly)
    assert removed.returncode == 0 and f"{ids[0]}: removed" in removed.stdout
    unknown = flyjobs("standby", "rm", "nosuchmachine", env=fly)
    assert unknown.returncode == 1 and "no standby machine nosuchmachine" in unknown.stderr
    assert flyjobs("standby", "rm", "--all", env=fly).returncode == 0
    assert not set(ids) & set(_machines(fly))  # destroyed (and so no longer listed)


def test_a_map_runs_on_standbys_and_gives_them_back_at_rest(fly: dict[str, str]) -> None:
    ids = _make_standbys(fly, 3)
    values = list(standby_funcs.machine_of.map(range(6), max_machines=3, standby=True))
    assert [x for x, _ in values] == list(range(6))
    assert {machine for _, machine in values} <= set(ids)
    assert set(_machines(fly)) == set(ids)  # no machine created: the standbys sufficed
    _assert_at_rest(fly, ids)


def test_two_maps_at_once_never_share_a_standby(fly: dict[str, str], tmp_path: Path) -> None:
    """Both maps claim from the same four standbys at the same moment; each machine that runs
    one map's inputs runs none of the other's, and every standby is back at rest after."""
    ids = _make_standbys(fly, 4)
    gate = str(tmp_path / "go")
    fn = standby_funcs.machine_of
    first = fn.map(range(2), [gate] * 2, max_machines=2, standby=True)
    second = fn.map(range(2, 4), [gate] * 2, max_machines=2, standby=True)

    def running() -> bool:
        return [m["state"] for m in _machines(fly).values()].count("started") == 4

    eventually(running, "both maps' machines started")
    Path(gate).touch()
    ran_first = {machine for _, machine in first}
    ran_second = {machine for _, machine in second}
    assert not ran_first & ran_second
    assert (ran_first | ran_second) & set(ids)  # standbys were used
    _assert_at_rest(fly, ids)


def test_a_standby_killed_mid_input_is_replaced_and_the_input_retried_once(
    fly: dict[str, str], tmp_path: Path
) -> None:
    ids = _make_standbys(fly, 2)
    gate = str(tmp_path / "go")
    results = standby_funcs.machine_of.map(range(2), [gate] * 2, max_machines=2, standby=True)

    def started() -> list[str] | None:
        machines = _machines(fly)
        up = [i for i in ids if machines[i]["state"] == "started"]
        return up if len(up) == 2 else None

    victim = eventually(started, "both standbys started")[0]
    with _api(fly) as http:
        # Killed from outside, as a crash would (the caller's lease refuses a signal request).
        processes = http.get(f"/v1/apps/{APP}/machines/{victim}/ps").json()
    os.kill(min(p["pid"] for p in processes), signal.SIGKILL)
    eventually(lambda: _machines(fly)[victim]["state"] == "stopped", "the victim stopped")
    Path(gate).touch()
    values = list(results)
    assert [x for x, _ in values] == [0, 1]
    assert victim not in {machine for _, machine in values}
    summary = results.summary()
    assert summary.retried == 1, summary
    _assert_at_rest(fly, ids)


CALLER = textwrap.dedent(
    """
    import sys

    import flyjobs._standby.claim as claim
    import standby_funcs

    claim.LEASE_TTL_S = 2  # a dead caller's claims expire within the test
    gate = sys.argv[1]
    results = standby_funcs.machine_of.map(range(2), [gate] * 2, max_machines=2, standby=True)
    list(results)
    """
)


@pytest.mark.slow
def test_sigkill_of_the_caller_mid_map_leaves_no_standby_started_after_gc(
    fly: dict[str, str], tmp_path: Path
) -> None:
    ids = _make_standbys(fly, 2)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    caller = subprocess.Popen(
        [sys.executable, "-c", CALLER, str(tmp_path / "never")],
        env={**base, **fly},
        cwd=SUPPORT,
    )
    try:
        eventually(
            lambda: all(_machines(fly)[i]["state"] == "started" for i in ids),
            "the caller's map started both standbys",
        )
    finally:
        caller.send_signal(signal.SIGKILL)
        caller.wait()
    # Its leases are no longer refreshed: they expire after their TTL, and no one holds them.
    eventually(lambda: not any(_leased(fly, i) for i in ids), "the dead caller's leases expired")
    assert all(_machines(fly)[i]["state"] == "started" for i in ids)  # left running
    done = flyjobs("gc", env=fly)
    assert done.returncode == 0, done.stderr
    assert sorted(line.split()[2] for line in done.stdout.splitlines() if "standby" in line) == (
        sorted(ids)
    )
    _assert_at_rest(fly, ids)


def test_a_pool_with_standby_starts_a_standby_and_gives_it_back_at_shutdown(
    fly: dict[str, str],
) -> None:
    ids = _make_standbys(fly, 1)
    try:
        assert standby_funcs.pooled_machine.remote() == ids[0]
        assert standby_funcs.pooled_machine.remote() == ids[0]  # warm: the same machine
    finally:
        standby_funcs.pool.shutdown()
    _assert_at_rest(fly, ids)
    assert set(_machines(fly)) == set(ids)  # none created


@pytest.mark.slow
def test_a_map_left_early_gives_its_standbys_back_before_it_returns(
    fly: dict[str, str], tmp_path: Path
) -> None:
    """A ``break`` out of a map whose other standby still runs an input: by the time the map
    is closed, every standby is stopped, reset and released (no waiting after it)."""
    ids = _make_standbys(fly, 2)
    gate = str(tmp_path / "never")
    fn = standby_funcs.machine_of
    with fn.map([0, 1], ["", gate], max_machines=2, standby=True, order_outputs=False) as values:
        for value in values:
            assert value[0] == 0
            break
    _assert_at_rest(fly, ids)


@pytest.mark.slow
def test_a_throttled_update_of_a_standby_is_waited_out_and_its_input_runs_there(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fly limits updates per machine (1/s, burst 3): a standby whose burst is spent answers
    the map's update 429; the map waits it out (client pacing off, so the 429 does come) and
    the input runs on that standby, not elsewhere."""
    monkeypatch.setenv("FLYJOBS_RATE_LIMITS", "off")
    for fly in fly_env(make_emulator(rate_limits=True), monkeypatch):
        [standby] = _make_standbys(fly, 1)
        resting = _machines(fly)[standby]["config"]
        with _api(fly) as http:
            path = f"/v1/apps/{APP}/machines/{standby}"
            codes = [
                http.post(path, json={"config": resting, "skip_launch": True}).status_code
                for _ in range(4)
            ]
        assert codes[-1] == 429  # its update burst is spent
        [(value, machine)] = list(standby_funcs.machine_of.map([7], standby=True))
        assert (value, machine) == (7, standby)
        _assert_at_rest(fly, [standby])


def test_a_pool_that_suspends_takes_no_standby_option() -> None:
    with pytest.raises(ConfigError, match='idle="suspend", standby=True'):
        Pool(idle="suspend", standby=True)
    with pytest.raises(ConfigError, match="standby='yes'"):
        Pool(standby="yes")  # type: ignore[arg-type]
