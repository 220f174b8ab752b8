"""``max_cost_usd``: a map whose cap is below its full cost stops before the cap (never above
it, counting its running machines), leaves no machine, and its outcomes say which inputs ran;
a resumed batch counts what its earlier runs spent.

The runtime runs in a project of its own whose ``[tool.flyjobs] prices`` names a table where a
shared-cpu-1x machine costs PER_S USD a second, so seconds show in cents.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import remote_funcs as funcs
from _pool_helpers import pool_machines
from _remote_helpers import machines, metadata
from _waiting import eventually

import flyjobs
from flyjobs._calls.attempt import EXIT_GRACE_S
from flyjobs._calls.runtime import Runtime, get_runtime, shutdown_runtime
from flyjobs._cost.ledger import billed_seconds

SHIPPED = Path(flyjobs.__file__).parent / "_cost" / "prices.toml"
PER_S = 0.10
#: The function's timeout: a machine (or another input) is projected to cost up to this plus
#: the grace a machine gets to exit.
TIMEOUT_S = 1.0
HOLD_USD = (TIMEOUT_S + EXIT_GRACE_S) * PER_S
slow = funcs.slow.with_options(timeout_s=TIMEOUT_S)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    for var in ("FLY_API_TOKEN", "FLYJOBS_STORE", "BUCKET_NAME", "FLYJOBS_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monthly = PER_S * 2592000
    text = SHIPPED.read_text().replace('"shared-1-256" = 1.94', f'"shared-1-256" = {monthly}')
    (tmp_path / "prices.toml").write_text(text)
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname = 'p'\n\n[tool.flyjobs]\nprices = 'prices.toml'\n"
    )
    shutdown_runtime()
    runtime = get_runtime()
    yield runtime
    eventually(
        lambda: all(m.state == "destroyed" for m in machines(runtime)),
        "every machine destroyed after the test (machines left behind)",
    )
    shutdown_runtime()


def _billed_usd(runtime: Runtime, batch_id: str) -> float:
    """The batch's machines' start→exit seconds, at PER_S."""
    return sum(
        billed_seconds(m.events) * PER_S
        for m in machines(runtime)
        if metadata(m).get("flyjobs_batch_id") == batch_id
    )


@pytest.mark.slow
def test_a_map_stops_before_its_cap_counting_running_machines(runtime: Runtime) -> None:
    # 90 inputs of 0.3 s cost over 90 * 0.3 * PER_S = $2.70 in machine time alone; 6 machines
    # at once would spend more than the cap if the running ones were not counted.
    cap = 1.35
    results = slow.map([0.3] * 90, max_machines=6, return_exceptions=True, max_cost_usd=cap)
    outcomes = list(results.outcomes())
    summary = results.summary()
    ran = [o for o in outcomes if o.ok]
    refused = [o for o in outcomes if isinstance(o.value, flyjobs.BudgetExceededError)]
    assert len(outcomes) == 90 and len(ran) + len(refused) == 90
    assert ran and refused, "some inputs ran, the rest were refused"
    assert all(o.value == 0.3 and o.cost_usd > 0 for o in ran)
    assert all(o.cost_usd == 0 and o.attempts == 0 for o in refused)
    # Never above the cap: not by this process's reckoning, nor by the machines' own events.
    batch_id = (ran[0].call_id or "").rsplit("-", 1)[0]
    billed = _billed_usd(runtime, batch_id)
    assert summary.cost_usd == pytest.approx(billed, abs=0.01)
    assert billed <= cap
    # What ran is what the cap allowed: the inputs that ran cost less than all would have.
    assert summary.cost_usd / len(ran) * 90 > cap
    error = refused[0].value
    assert isinstance(error, flyjobs.BudgetExceededError)
    assert error.max_cost_usd == cap and error.spent_usd <= cap
    assert {o.index for o in error.outcomes if o.ok} == {o.index for o in ran}


def test_without_return_exceptions_the_cap_raises_with_the_outcomes_so_far(
    runtime: Runtime,
) -> None:
    # One machine fits (HOLD_USD) but a second input on it would cross the cap.
    cap = HOLD_USD + 0.02
    values = []
    with pytest.raises(flyjobs.BudgetExceededError) as caught:
        for value in slow.map([0.3] * 5, max_machines=1, max_cost_usd=cap):
            values.append(value)
    error = caught.value
    assert values and all(v == 0.3 for v in values)
    assert [o.value for o in error.outcomes if o.ok] == values
    assert error.spent_usd <= cap
    assert "max_cost_usd" in str(error)


def test_a_resumed_batch_counts_what_earlier_runs_spent(runtime: Runtime) -> None:
    first = slow.map([0.3, 0.31], batch="costly")
    assert list(first) == [0.3, 0.31]
    spent = first.summary().cost_usd
    assert spent > 0
    # The recorded inputs need no machine; the new one would need one more than is left.
    again = slow.map(
        [0.3, 0.31, 0.32], batch="costly", return_exceptions=True, max_cost_usd=spent + 0.5
    )
    values = list(again)
    assert values[:2] == [0.3, 0.31]
    assert isinstance(values[2], flyjobs.BudgetExceededError)
    assert again.summary().cost_usd == pytest.approx(spent)


def test_a_pool_stops_before_its_cap(runtime: Runtime) -> None:
    # A machine given a call, or a wait for one, may run TIMEOUT_S (> idle_s) and its exit
    # grace: one fits, but once it has run 0.2 s no further call fits on it, nor a second one.
    cap = HOLD_USD + 0.02
    pool = flyjobs.Pool(max=2, idle_s=0.5, max_cost_usd=cap)
    fn = funcs.slow.with_options(pool=pool, timeout_s=TIMEOUT_S)
    ran = 0
    try:
        with pytest.raises(flyjobs.BudgetExceededError, match="max_cost_usd"):
            for _ in range(20):
                assert fn.remote(0.1) == 0.1
                ran += 1
    finally:
        pool.shutdown()
    assert ran >= 1
    ledger = pool.ledger()
    billed = sum(billed_seconds(m.events) * PER_S for m in pool_machines(runtime, pool))
    assert ledger["cost_usd"] == pytest.approx(billed, abs=0.01)
    assert billed <= cap


@pytest.mark.parametrize("cap", [0, -2, "1", float("inf")])
def test_a_pools_cap_is_checked_when_it_is_made(cap: object) -> None:
    with pytest.raises(flyjobs.ConfigError, match=r"Pool\(max_cost_usd="):
        flyjobs.Pool(max_cost_usd=cap)  # type: ignore[arg-type]
