"""The client under the emulator's faults: 429 storms, 5xx answers, dropped connections, latency.

Every call must complete or fail with the right typed error, and a create must never make a
twin, whatever the faults. Fault patterns are seeded, so a failure reproduces.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from _mc_helpers import client_for, quick_config

from flyjobs._exceptions import RateLimitedError, ServerError, TransportError
from flyjobs.emulator import RunningEmulator
from flyjobs.machines import MachinesClient, RetryPolicy

pytestmark = pytest.mark.anyio

#: What a call may fail with when the server misbehaves (once the retry budget is spent).
FAULT_ERRORS = (ServerError, TransportError, RateLimitedError)
PATIENT = RetryPolicy(max_attempts=12, base_s=0.01, max_s=0.2)


async def _job(fly: MachinesClient, app: str, name: str, outcomes: dict[str, str]) -> None:
    """create → wait destroyed → get, recording how far it got (or which error stopped it)."""
    try:
        machine = await fly.create_machine(app, quick_config(), name=name)
        outcomes[name] = "created"
        await fly.wait(app, machine.id, "destroyed", timeout_s=60)
        await fly.get_machine(app, machine.id)
        outcomes[name] = "done"
    except FAULT_ERRORS as exc:
        outcomes[name] += f" then {type(exc).__name__}"


async def _run_jobs(fly: MachinesClient, app: str, count: int) -> dict[str, str]:
    outcomes = {f"job-{i}": "" for i in range(count)}
    async with anyio.create_task_group() as tasks:
        for name in outcomes:
            tasks.start_soon(_job, fly, app, name, outcomes)
    return outcomes


async def _machines_per_name(emu: RunningEmulator, app: str) -> Counter[str | None]:
    async with client_for(emu, retry=PATIENT) as fly:
        machines = await fly.list_machines(app, include_deleted=True)
        for machine in machines:
            if machine.state != "destroyed":
                await fly.delete_machine(app, machine.id, force=True)
        assert await fly.list_machines(app) == []  # nothing left running
        return Counter(m.name for m in machines)


@pytest.mark.parametrize(
    "faults",
    [
        {"error_rate": 0.3, "seed": 11},
        {"drop_rate": 0.2, "seed": 12},
        {"latency_s": 0.05, "seed": 13},
        {"error_rate": 0.2, "drop_rate": 0.15, "latency_s": 0.02, "seed": 14},
    ],
    ids=["5xx", "drops", "latency", "all"],
)
async def test_faulty_server_never_gets_a_twin_machine(
    make_emulator: Callable[..., RunningEmulator], faults: dict[str, Any]
) -> None:
    emu = make_emulator(**faults)
    app = f"f-{secrets.token_hex(4)}"
    async with client_for(emu, retry=PATIENT) as setup:
        await setup.create_app(app)
    async with client_for(emu) as fly:
        outcomes = await _run_jobs(fly, app, 12)
    per_name = await _machines_per_name(emu, app)
    assert max(per_name.values()) == 1, per_name
    for name, outcome in outcomes.items():
        # A create that returned has its machine; one that failed left none.
        assert per_name[name] == (1 if outcome.startswith(("created", "done")) else 0), outcome
    assert sum(outcome == "done" for outcome in outcomes.values()) >= 6, outcomes
    if "latency_s" in faults and len(faults) == 2:
        assert set(outcomes.values()) == {"done"}


@pytest.mark.slow  # a few seconds: every create takes 2 s
async def test_a_slow_create_whose_answer_is_late_or_lost_is_adopted_never_doubled(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    # On Fly a create can take longer than the client's request timeout (a cold image pull, a
    # capacity search), and its answer can be lost. Given up on, it is still made: the create
    # must wait for it, or find it by name, never fail while it is being made (that machine
    # would run for nobody) nor make it twice.
    emu = make_emulator(create_latency_s=2.0, drop_rate=0.2, seed=21)
    app = f"s-{secrets.token_hex(4)}"
    async with client_for(emu, retry=PATIENT) as setup:
        await setup.create_app(app)
    async with client_for(emu, timeout_s=0.25) as fly:
        outcomes = await _run_jobs(fly, app, 6)
    assert all(outcome.startswith(("created", "done")) for outcome in outcomes.values()), outcomes
    per_name = await _machines_per_name(emu, app)
    assert per_name == {name: 1 for name in outcomes}, per_name


@pytest.mark.slow  # a few seconds
async def test_429_storm_is_ridden_out_with_retry_after(
    make_emulator: Callable[..., RunningEmulator], caplog: pytest.LogCaptureFixture
) -> None:
    emu = make_emulator(rate_limits=True)
    app = f"r-{secrets.token_hex(4)}"
    caplog.set_level(logging.DEBUG, logger="flyjobs.machines")
    retry = RetryPolicy(max_attempts=10, base_s=0.05, max_s=1.0)
    async with client_for(emu, retry=retry, rate_limits="off") as fly:
        await fly.create_app(app)
        outcomes = await _run_jobs(fly, app, 6)
    assert set(outcomes.values()) == {"done"}
    storm = [r for r in caplog.records if " 429 " in r.getMessage()]
    assert storm, "the emulator should have answered 429"
    assert max((await _machines_per_name(emu, app)).values()) == 1


@pytest.mark.slow  # several seconds: run in the slow suite
async def test_client_side_pacing_avoids_429s(
    make_emulator: Callable[..., RunningEmulator], caplog: pytest.LogCaptureFixture
) -> None:
    emu = make_emulator(rate_limits=True)
    app = f"p-{secrets.token_hex(4)}"
    caplog.set_level(logging.DEBUG, logger="flyjobs.machines")
    async with client_for(emu, rate_limits="fly") as fly:
        await fly.create_app(app)
        outcomes = await _run_jobs(fly, app, 6)
        machine = (await fly.list_machines(app, include_deleted=True))[0]
        async with anyio.create_task_group() as tasks:
            for _ in range(15):
                tasks.start_soon(fly.get_machine, app, machine.id)
    assert set(outcomes.values()) == {"done"}
    # Paced at 90% of the limits: a 429 takes a stalled server that then answers a backlog at
    # once, which a heavily loaded test host can produce; one is tolerated.
    refused = [r.getMessage() for r in caplog.records if " 429 " in r.getMessage()]
    assert len(refused) <= 1, refused
    await _machines_per_name(emu, app)
