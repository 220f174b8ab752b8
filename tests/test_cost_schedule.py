"""``flyjobs schedule ls`` tells what a scheduled function's run costs, from its machine's own
start and exit events, and what a month of runs at its cadence costs (time-scaled emulator)."""

from __future__ import annotations

import pytest

from .test_schedule import JOBS, Deployment, deployment, finished

__all__ = ("deployment",)  # the fixture, used by name


@pytest.mark.slow
def test_ls_tells_the_cost_of_a_run_and_of_a_month_at_the_cadence(
    deployment: Deployment,
) -> None:
    deployment.write("jobs.py", JOBS)
    deployment.cli("deploy", "jobs.py")
    deployment.runs_until("tick", lambda runs: len(finished(runs)) >= 2)
    rows = deployment.ls()
    tick, report = rows["tick"], rows["report"]
    assert tick["run_cost_usd"] > 0
    # Hourly: 720 runs in 30 days; daily: 30.
    assert tick["month_cost_usd"] == pytest.approx(tick["run_cost_usd"] * 720)
    assert report["month_cost_usd"] == pytest.approx(report["run_cost_usd"] * 30)
    table = deployment.cli("ls").stdout
    assert "per run" in table and "per month at this cadence" in table
