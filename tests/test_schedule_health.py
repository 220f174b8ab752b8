"""Schedule health: late and missed ticks, consecutive failures (`flyjobs._schedules.health`), and
``flyjobs schedule ls``/``check`` showing them for a cron resident killed across a tick.

The rules are checked on recorded histories with an injected clock; the end-to-end tests drive a
standalone emulator at ``--time-scale`` whose clock origin the CLI is given, as ``flyjobs dev``
prints it, and wait (bounded) for the state the runs leave behind.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _waiting import eventually

from flyjobs._schedules.health import assess, default_grace_s
from flyjobs._schedules.status import Run
from flyjobs.emulator import RunningEmulator

from .test_schedule import APP, HOUR_PER_S, RESULT_KEY, WAIT_S, Deployment

HOUR = 3600.0
#: Every three hours, on the hour (UTC).
EVERY_3H = {"cron": "0 */3 * * *", "tz": "UTC"}
#: A tick of EVERY_3H: 2026-01-01 00:00 UTC.
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()


def run(status: str, tick: float, started: float | None = None) -> Run:
    return Run(
        started=tick if started is None else started, status=status, duration_s=1.0, tick=tick
    )


def test_a_cron_schedule_that_ran_each_tick_is_healthy() -> None:
    history = [run("pending", T0), run("ok", T0), run("pending", T0 + 3 * HOUR)]
    health = assess(EVERY_3H, history, now=T0 + 3 * HOUR + 60, since=T0 - HOUR)
    assert health.healthy
    assert health.cadence == "cron 0 */3 * * * (UTC), every 3h"
    assert (health.last_run, health.last_status) == (T0, "ok")
    assert health.grace_s == default_grace_s(3 * HOUR) == 1080.0


def test_a_tick_unrun_past_the_grace_is_late_then_missed_once_the_schedule_moves_on() -> None:
    history = [run("ok", T0), run("pending", T0 + 3 * HOUR)]
    grace = default_grace_s(3 * HOUR)
    within = assess(EVERY_3H, history, now=T0 + 3 * HOUR + grace - 1, since=T0)
    assert within.healthy
    late = assess(EVERY_3H, history, now=T0 + 3 * HOUR + grace + 1, since=T0)
    assert (late.late, late.missed, late.healthy) == (T0 + 3 * HOUR, [], False)
    assert late.problems(str) == [f"late (due {T0 + 3 * HOUR}, grace 18m)"]
    # The resident came back and waits for the next tick: the one it slept through is missed.
    back = [*history, run("pending", T0 + 6 * HOUR)]
    missed = assess(EVERY_3H, back, now=T0 + 4 * HOUR, since=T0)
    assert (missed.late, missed.missed) == (None, [T0 + 3 * HOUR])
    assert missed.problems(str) == [f"missed 1 tick (last due {T0 + 3 * HOUR})"]
    # Down over two ticks: the first is missed, the second late.
    both = assess(EVERY_3H, history, now=T0 + 6 * HOUR + grace + 1, since=T0)
    assert (both.late, both.missed) == (T0 + 6 * HOUR, [T0 + 3 * HOUR])
    # A later good run: healthy again.
    again = [*back, run("ok", T0 + 6 * HOUR)]
    assert assess(EVERY_3H, again, now=T0 + 6 * HOUR + 60, since=T0).healthy


def test_ticks_recorded_as_running_skipped_or_missed_are_not_late() -> None:
    grace = default_grace_s(3 * HOUR)
    now = T0 + 3 * HOUR + grace + 1
    going = [run("ok", T0), run("running", T0 + 3 * HOUR)]
    assert assess(EVERY_3H, going, now=now, since=T0).healthy
    skipped = [run("ok", T0), run("skipped", T0 + 3 * HOUR)]
    assert assess(EVERY_3H, skipped, now=now, since=T0).healthy
    recorded = [run("ok", T0), run("missed", T0 + 3 * HOUR), run("pending", T0 + 6 * HOUR)]
    assert assess(EVERY_3H, recorded, now=now, since=T0).missed == [T0 + 3 * HOUR]


def test_failures_since_the_last_good_run_count_and_a_good_run_clears_them() -> None:
    history = [run("failed", T0 - 3 * HOUR), run("ok", T0), run("failed", T0 + 3 * HOUR)]
    history += [run("skipped", T0 + 6 * HOUR), run("crashed", T0 + 9 * HOUR)]
    health = assess(EVERY_3H, history, now=T0 + 9 * HOUR + 60, since=T0 - 3 * HOUR)
    assert health.consecutive_failures == 2
    assert health.problems(str) == ["failing (2 runs in a row)"]
    fixed = assess(EVERY_3H, [*history, run("ok", T0 + 12 * HOUR)], now=T0 + 12 * HOUR + 60,
                   since=T0)  # fmt: skip
    assert fixed.healthy


def test_a_fly_interval_schedule_counts_whole_intervals_from_its_last_run() -> None:
    hourly = {"every": "hourly"}
    grace = default_grace_s(HOUR)
    history = [run("ok", T0 + 17)]  # Fly's ticks are fuzzy: a few seconds off the hour
    assert assess(hourly, history, now=T0 + HOUR + 17 + grace - 1, since=T0).healthy
    late = assess(hourly, history, now=T0 + HOUR + 17 + grace + 1, since=T0)
    assert (late.late, late.missed) == (T0 + HOUR + 17, [])
    # Running now: its run is the tick's.
    assert assess(hourly, history, now=T0 + HOUR + 17 + grace + 1, since=T0, running=True).healthy
    down = assess(hourly, history, now=T0 + 3 * HOUR + 17 + grace + 1, since=T0)
    assert (down.late, down.missed) == (T0 + 3 * HOUR + 17, [T0 + HOUR + 17, T0 + 2 * HOUR + 17])
    # Never ran: Fly runs it at creation.
    never = assess(hourly, [], now=T0 + grace + 1, since=T0)
    assert never.late == T0


def test_the_grace_period_can_be_given() -> None:
    history = [run("ok", T0), run("pending", T0 + 3 * HOUR)]
    now = T0 + 3 * HOUR + 120
    assert assess(EVERY_3H, history, now=now, since=T0).healthy
    assert assess(EVERY_3H, history, now=now, since=T0, grace_s=60).late == T0 + 3 * HOUR


class ClockedDeployment(Deployment):
    """A `Deployment` whose CLI reads the emulator's scaled clock, as ``flyjobs dev`` exports it."""

    def __init__(self, emulator: RunningEmulator, folder: Path, origin: float) -> None:
        super().__init__(emulator, folder)
        self.origin = origin

    def env(self) -> dict[str, str]:
        clock = {"FLYJOBS_TIME_SCALE": repr(HOUR_PER_S), "FLYJOBS_TIME_ORIGIN": repr(self.origin)}
        return {**super().env(), **clock}

    def check(self) -> subprocess.CompletedProcess[str]:
        return self.cli("check", ok=False)

    def check_says(self, words: str) -> subprocess.CompletedProcess[str]:
        """The first ``schedule check`` whose output has ``words`` (bounded by WAIT_S)."""
        seen: list[str] = []

        def says() -> subprocess.CompletedProcess[str] | None:
            done = self.check()
            seen.append(done.stdout + done.stderr)
            return done if words in done.stdout else None

        try:
            return eventually(says, f"check says {words!r}", WAIT_S)
        except AssertionError as exc:
            raise AssertionError(f"check never said {words!r}: {seen[-3:]}") from exc

    def only_machine(self) -> str:
        (machine,) = self.machines()
        machine_id: str = machine["id"]
        return machine_id

    def stop_machine(self, machine_id: str) -> None:
        self.http.post(f"/v1/apps/{APP}/machines/{machine_id}/stop").raise_for_status()
        eventually(
            lambda: self.machine(machine_id)["state"] == "stopped", "the resident stopped", WAIT_S
        )

    def start_machine(self, machine_id: str) -> None:
        self.http.post(f"/v1/apps/{APP}/machines/{machine_id}/start").raise_for_status()


@pytest.fixture
def clocked(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> Iterator[ClockedDeployment]:
    origin = time.time()
    emulator = make_emulator(time_scale=HOUR_PER_S, time_origin=origin)
    deployment = ClockedDeployment(emulator, tmp_path, origin)
    created = deployment.http.post("/v1/apps", json={"app_name": APP, "org_slug": "personal"})
    assert created.is_success
    secret = {"value": RESULT_KEY}
    assert deployment.http.post(
        f"/v1/apps/{APP}/secrets/FLYJOBS_RESULT_KEY", json=secret
    ).is_success
    yield deployment
    deployment.http.close()


#: A job every 8 scaled hours (8 s): its grace is 48 scaled minutes (0.8 s).
EVERY_8H = """
    import flyjobs

    @flyjobs.remote(schedule=flyjobs.Cron("0 */8 * * *"))
    def every8() -> str:
        return "ran"
"""


@pytest.mark.slow
@pytest.mark.timeout(6 * WAIT_S)
def test_a_resident_down_over_a_tick_is_late_then_missed(clocked: ClockedDeployment) -> None:
    clocked.write("eight.py", EVERY_8H)
    clocked.cli("deploy", "eight.py")
    clocked.runs_until("every8", lambda runs: any(r["status"] == "ok" for r in runs))
    healthy = clocked.check()
    assert (healthy.returncode, healthy.stdout) == (0, "all 1 schedule healthy\n")
    resident = clocked.only_machine()
    clocked.stop_machine(resident)
    late = clocked.check_says("late")
    assert late.returncode == 1
    assert late.stdout.startswith("every8 (eight:every8): late (due ")
    row = clocked.ls()["every8"]
    assert row["health"]["late"] is not None and row["health"]["missed"] == []
    clocked.start_machine(resident)
    missed = clocked.check_says("missed")
    assert missed.returncode == 1
    assert "every8 (eight:every8): missed 1 tick (last due " in missed.stdout
    shown = clocked.cli("ls").stdout
    assert "every: cron 0 */8 * * * (UTC), every 8h  last run: " in shown
    assert "missed 1 tick" in shown
