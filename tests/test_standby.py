"""Standby machines (``flyjobs standby``): made stopped ahead of time, claimed by maps under their
lease, started at once, and given back at rest however the map ends; ``flyjobs gc`` recovers
those of a caller that died. Against a standalone emulator standing in for Fly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _fly_helpers import APP, fly_env

from flyjobs.emulator import RunningEmulator

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
    made = flyjobs("standby", "create", "--count", str(count), "--function", TARGET, env=env)
    assert made.returncode == 0, made.stderr
    ids = made.stdout.split()
    assert len(ids) == count
    return ids


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


def test_standby_create_ls_rm(fly: dict[str, str]) -> None:
    ids = _make_standbys(fly, 2)
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
