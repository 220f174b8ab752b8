"""What a batch cost: its ledger is the sum, over its machines' own start and exit events, of
their duration times their guest's price (to the cent), with and without retries; inputs' costs
add up to it; ``max_cost_usd`` stops a map before its cap, counting running machines."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pool_funcs
import pytest
import remote_funcs as funcs
from _pool_helpers import live, pool_machines
from _remote_helpers import machines, metadata
from _waiting import eventually

import flyjobs
from flyjobs._calls.runtime import Runtime
from flyjobs._cost.ledger import billed_seconds
from flyjobs._cost.prices import prices_for
from flyjobs.machines import Machine

pytestmark = pytest.mark.usefixtures("no_machine_left")

SHIPPED = Path(flyjobs.__file__).parent / "_cost" / "prices.toml"
#: USD per second of a shared-cpu-1x 256 MB machine in the tests' price table.
PER_S = 0.10


@pytest.fixture
def priced(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The runtime prices machines from a table of ours: shared-cpu-1x at PER_S USD a second
    (the shipped prices are fractions of a cent for a test's seconds)."""
    monthly = PER_S * 2592000
    text = SHIPPED.read_text().replace('"shared-1-256" = 1.94', f'"shared-1-256" = {monthly}')
    path = tmp_path / "prices.toml"
    path.write_text(text)
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, prices=path))
    yield path


def _billed_usd(runtime: Runtime, batch_id: str, prices: Path) -> float:
    """Sum over the batch's machines of their start→exit seconds times their price."""
    batch = [m for m in machines(runtime) if metadata(m).get("flyjobs_batch_id") == batch_id]
    return _events_usd(batch, prices)


def _events_usd(of: list[Machine], prices: Path) -> float:
    table = prices_for(prices)
    total = 0.0
    for m in of:
        config = m.config.model_dump(exclude_none=True) if m.config else None
        total += billed_seconds(m.events) * table.usd_per_s(table.guest_of(config), m.region)
    return total


def test_a_batch_costs_its_machines_billed_events_times_their_price(
    runtime: Runtime, priced: Path
) -> None:
    results = funcs.slow.map([0.3] * 6, max_machines=2)
    outcomes = list(results.outcomes())
    summary = results.summary()
    batch_id = (outcomes[0].call_id or "").rsplit("-", 1)[0]
    billed = _billed_usd(runtime, batch_id, priced)
    assert billed > 6 * 0.3 * PER_S  # the machines ran the inputs, and booted
    assert summary.cost_usd == pytest.approx(billed, abs=0.01)
    # A machine's whole bill (boot, idle) is split among its inputs: they add up to the batch.
    assert sum(o.cost_usd for o in outcomes) == pytest.approx(summary.cost_usd, abs=1e-9)
    assert all(o.cost_usd > 0 for o in outcomes)
    assert summary.wasted_usd == 0.0
    assert summary.busy_s > 0 and summary.idle_s >= 0
    assert sum(summary.phases_usd.values()) == pytest.approx(summary.cost_usd)
    assert "cost" in str(summary)


def test_retried_attempts_are_billed_and_counted_as_wasted(
    runtime: Runtime, priced: Path, tmp_path: Path
) -> None:
    markers = [str(tmp_path / f"m{i}") for i in range(2)]
    results = funcs.crash_once.map(markers, max_machines=2)
    outcomes = list(results.outcomes())
    assert [o.value for o in outcomes] == ["second time lucky"] * 2
    assert [o.attempts for o in outcomes] == [2, 2]
    summary = results.summary()
    batch_id = (outcomes[0].call_id or "").split("-r")[0].rsplit("-", 1)[0]
    assert summary.cost_usd == pytest.approx(_billed_usd(runtime, batch_id, priced), abs=0.01)
    assert sum(o.cost_usd for o in outcomes) == pytest.approx(summary.cost_usd, abs=1e-9)
    assert 0 < summary.wasted_usd < summary.cost_usd
    assert all(len(o.shares) == 2 and o.shares[0].failed for o in outcomes)


@pytest.mark.parametrize("cap", [0, -1.0, "5", True, float("nan")])
def test_max_cost_usd_is_checked_before_any_machine(runtime: Runtime, cap: object) -> None:
    before = len(machines(runtime))
    with pytest.raises(flyjobs.ConfigError, match="max_cost_usd"):
        funcs.add.map([1, 2], max_cost_usd=cap)  # type: ignore[call-overload]
    assert len(machines(runtime)) == before


def test_a_pools_idle_time_is_counted_as_idle(runtime: Runtime, priced: Path) -> None:
    pool = flyjobs.Pool(max=1, idle_s=1.0)
    try:
        assert pool_funcs.pid_of.with_options(pool=pool).remote(1)[0] == 1
        # With no more calls, the machine waits idle_s for one, then exits by itself.
        eventually(lambda: live(runtime, pool) == [], "the idle machine exited")
    finally:
        pool.shutdown()
    ledger = pool.ledger()
    assert ledger["machines"] == 1
    assert ledger["cost_usd"] == pytest.approx(
        _events_usd(pool_machines(runtime, pool), priced), abs=0.01
    )
    assert ledger["idle_s"] >= 0.5 * pool.idle_s  # its wait for a call that never came
    assert 0 < ledger["busy_s"] < ledger["idle_s"]
    assert ledger["wasted_usd"] == 0.0
