"""Schedule health: late and missed ticks, consecutive failures (`flyjobs._schedules.health`), and
``flyjobs schedule ls``/``check`` showing them for a cron resident killed across a tick.

The rules are checked on recorded histories with an injected clock; the end-to-end tests drive a
standalone emulator at ``--time-scale`` whose clock origin the CLI is given, as ``flyjobs dev``
prints it, and wait (bounded) for the state the runs leave behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _waiting import eventually

import flyjobs
from flyjobs._declare.schedule import schedule_spec
from flyjobs._machine_side.alerts import ATTEMPTS, send_alert
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

    def kill_machine(self, machine_id: str) -> None:
        """SIGKILL every process of the machine, as a host failure would: not a stop."""
        response = self.http.get(f"/v1/apps/{APP}/machines/{machine_id}/ps")
        response.raise_for_status()
        group = os.getpgid(response.json()[0]["pid"])
        os.killpg(group, signal.SIGKILL)

    def start_machine(self, machine_id: str) -> None:
        self.http.post(f"/v1/apps/{APP}/machines/{machine_id}/start").raise_for_status()

    def deploy_then_stop(
        self, file: str, source: str, name: str
    ) -> tuple[str, list[dict[str, Any]], subprocess.CompletedProcess[str]]:
        """Deploy ``source`` as ``file``, wait for a run of ``name`` that is ``ok``, then stop
        the resident until ``schedule check`` says ``late``: ``(resident, runs, that check)``."""
        self.write(file, source)
        self.cli("deploy", file)
        resident = self.only_machine()
        runs = self.runs_until(name, lambda runs: any(r["status"] == "ok" for r in runs))
        self.stop_machine(resident)
        return resident, runs, self.check_says("late")


def clocked_deployment(
    make_emulator: Callable[..., RunningEmulator], folder: Path, **settings: Any
) -> ClockedDeployment:
    """A `ClockedDeployment` on a new emulator with ``settings``, its app and result key made."""
    origin = time.time()
    emulator = make_emulator(time_scale=HOUR_PER_S, time_origin=origin, **settings)
    deployment = ClockedDeployment(emulator, folder, origin)
    deployment.make_app()
    return deployment


@pytest.fixture
def clocked(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> Iterator[ClockedDeployment]:
    deployment = clocked_deployment(make_emulator, tmp_path)
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
    due = row["health"]["late"]
    clocked.start_machine(resident)
    # Back, it waits for the next tick; stopped again before that one, what it missed stays.
    eventually(lambda: clocked.ls()["every8"]["next_due"] > due, "the resident is back", WAIT_S)
    clocked.stop_machine(resident)
    missed = clocked.check_says("missed")
    assert missed.returncode == 1
    assert "every8 (eight:every8): missed 1 tick (last due " in missed.stdout
    shown = clocked.cli("ls").stdout
    assert "every: cron 0 */8 * * * (UTC), every 8h  last run: " in shown
    assert "missed 1 tick" in shown


class Receiver:
    """A loopback HTTP server that keeps each POST (headers, body) and answers the status codes
    it is given in turn (then 200)."""

    def __init__(self, answers: Iterable[int] = ()) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.answers = list(answers)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.posts.append((dict(self.headers.items()), self.rfile.read(length)))
                self.send_response(outer.answers.pop(0) if outer.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = (
            f"http://127.0.0.1:{self.server.server_address[1]}/hooks/flyjobs?token=hook-secret"
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict[str, Any]]:
        """The bodies received, each checked against its signature under RESULT_KEY."""
        out = []
        for headers, body in self.posts:
            expected = "sha256=" + hmac.new(RESULT_KEY.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["Flyjobs-Signature"], expected)
            assert RESULT_KEY not in body.decode() and RESULT_KEY not in str(headers)
            out.append(json.loads(body))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_alert_url_is_checked_when_decorated() -> None:
    with pytest.raises(flyjobs.ConfigError, match="pass schedule= too"):
        flyjobs.remote(alert_url="https://alerts.example.com/x")
    for bad in ("ftp://alerts.example.com/x", "alerts.example.com/x", "https:///x"):
        with pytest.raises(flyjobs.ConfigError, match="give an http:// or https:// URL"):
            flyjobs.remote(schedule="hourly", alert_url=bad)
    with pytest.raises(flyjobs.ConfigError, match="takes a URL string"):
        flyjobs.remote(schedule="hourly", alert_url=b"https://x")  # type: ignore[call-overload]
    secret = "https://hooks.example.com/T000/B000/s3cr3t?token=abc"
    fn = flyjobs.remote(schedule="daily", alert_url=secret)(abs)
    assert fn.options.alert_url == secret
    assert "s3cr3t" not in repr(fn.options) and "https://hooks.example.com/…" in repr(fn.options)
    with pytest.raises(flyjobs.ConfigError) as exc:
        flyjobs.remote(schedule="hourly", alert_url="gopher://h/s3cr3t")
    assert "s3cr3t" not in str(exc.value)


def test_an_alert_is_signed_and_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYJOBS_RESULT_KEY", RESULT_KEY)
    receiver = Receiver(answers=[503, 429])
    waits: list[float] = []
    try:
        sent = send_alert(
            receiver.url,
            schedule="jobs:nightly",
            status="failed",
            tick=T0,
            started=T0 + 1,
            attempt=1,
            error={"type": "builtins.ValueError", "message": "the feed is down", "traceback": "x"},
            sleep=waits.append,
        )
        assert sent
        assert len(receiver.posts) == 3 and waits == [0.5, 1.5]
        (first, *_) = receiver.alerts()
        assert first["schedule"] == "jobs:nightly" and first["status"] == "failed"
        assert first["error"] == {"type": "builtins.ValueError", "message": "the feed is down"}
        assert first["id"] == f"jobs:nightly@{T0:.3f}:failed"
        # A refusal is not retried; a dead URL is tried ATTEMPTS times; neither raises.
        refused = Receiver(answers=[400])
        assert not send_alert(
            refused.url, schedule="s", status="failed", tick=T0, sleep=waits.append
        )
        assert len(refused.posts) == 1
        refused.close()
    finally:
        receiver.close()
    waits.clear()
    dead = f"http://127.0.0.1:{receiver.server.server_address[1]}/gone"
    assert not send_alert(dead, schedule="s", status="missed", tick=T0, sleep=waits.append)
    assert len(waits) == ATTEMPTS - 1
    monkeypatch.delenv("FLYJOBS_RESULT_KEY")
    assert not send_alert(dead, schedule="s", status="failed", tick=T0, sleep=waits.append)


FAILING = """
    import flyjobs

    @flyjobs.remote(schedule="weekly", alert_url={url!r})
    def broken() -> None:
        raise ValueError("the feed is down (42)")

    @flyjobs.remote(schedule="weekly", alert_url={dead!r})
    def unheard() -> None:
        raise ValueError("nobody listens")
"""


@pytest.mark.slow
@pytest.mark.timeout(4 * WAIT_S)
def test_a_failed_run_alerts_once_and_a_dead_alert_url_breaks_nothing(
    clocked: ClockedDeployment, receiver: Receiver
) -> None:
    dead = "http://127.0.0.1:9/hooks/s3cr3t"
    clocked.write("failing.py", FAILING.format(url=receiver.url, dead=dead))
    clocked.cli("deploy", "failing.py")
    for name in ("broken", "unheard"):
        clocked.runs_until(name, lambda runs: any(r["status"] == "failed" for r in runs))
    (alert,) = eventually(receiver.alerts, "the alert arrived", WAIT_S)
    assert alert["schedule"] == "failing:broken" and alert["status"] == "failed"
    assert alert["error"] == {"type": "builtins.ValueError", "message": "the feed is down (42)"}
    failing = clocked.check_says("failing (1 run in a row)")
    assert failing.returncode == 1
    assert "broken (failing:broken): failing (1 run in a row)" in failing.stdout
    assert "unheard (failing:unheard): failing (1 run in a row)" in failing.stdout
    logs = clocked.cli("logs", "unheard").stdout
    assert "alert of failed run not delivered after 3 tries" in logs
    assert "s3cr3t" not in logs
    assert len(receiver.posts) == 1


WATCHED = """
    import flyjobs

    @flyjobs.remote(schedule=flyjobs.Cron("0 */8 * * *"), alert_url={url!r})
    def watched() -> str:
        return "ran"
"""


@pytest.mark.slow
@pytest.mark.timeout(6 * WAIT_S)
def test_a_resident_down_over_a_tick_records_the_miss_and_alerts_it_once(
    clocked: ClockedDeployment, receiver: Receiver
) -> None:
    resident, _, _ = clocked.deploy_then_stop(
        "watch.py", WATCHED.format(url=receiver.url), "watched"
    )
    assert clocked.machine(resident)["config"]["rootfs"] == {"persist": "always"}
    clocked.start_machine(resident)
    runs = clocked.runs_until("watched", lambda runs: any(r["status"] == "missed" for r in runs))
    # Stopped again before its next tick, so that what it missed stays what check sees.
    clocked.stop_machine(resident)
    missed = clocked.check_says("missed 1 tick")
    assert "watched (watch:watched): missed 1 tick (last due " in missed.stdout
    (gone,) = [run for run in runs if run["status"] == "missed"]
    assert gone["reason"] == "the scheduler was down"
    (alert,) = eventually(receiver.alerts, "the missed alert arrived", WAIT_S)
    assert alert["schedule"] == "watch:watched" and alert["status"] == "missed"
    assert alert["missed_ticks"] == [gone["tick"]] and alert["tick"] == gone["tick"]
    assert alert["error"] == {
        "type": "MissedTicks",
        "message": "1 tick missed: the scheduler was down",
    }
    assert len(receiver.posts) == 1


def test_catch_up_is_checked_and_stays_none_by_default() -> None:
    assert flyjobs.Cron("0 3 * * *").catch_up == "none"
    latest = flyjobs.Cron("0 3 * * *", catch_up="latest")
    assert repr(latest) == "Cron('0 3 * * *', tz='UTC', catch_up='latest')"
    assert latest != flyjobs.Cron("0 3 * * *")
    assert schedule_spec(flyjobs.Cron("0 3 * * *")) == {"cron": "0 3 * * *", "tz": "UTC"}
    assert schedule_spec(latest)["catch_up"] == "latest"
    for bad in ("all", "Latest", None, True):
        with pytest.raises(flyjobs.ConfigError, match=r"use 'none' \(ticks missed"):
            flyjobs.Cron("0 3 * * *", catch_up=bad)  # type: ignore[arg-type]


CATCHING_UP = """
    import os
    import pathlib
    import flyjobs

    # The test's folder (the module itself runs from its code bundle on the machine).
    RUNS = pathlib.Path({runs!r})

    @flyjobs.remote(schedule=flyjobs.Cron("0 */8 * * *", catch_up="latest"), alert_url={url!r})
    def eight() -> str:
        with RUNS.open("a") as runs:
            runs.write(os.environ["FLYJOBS_SCHEDULED_TICK"] + "\\n")
        return "ran"
"""


@pytest.mark.slow
@pytest.mark.timeout(6 * WAIT_S)
def test_catch_up_latest_runs_the_tick_missed_while_down_once(
    clocked: ClockedDeployment, receiver: Receiver
) -> None:
    runs_file = str(clocked.folder / "caught-up-runs")
    resident, first, late = clocked.deploy_then_stop(
        "catching.py", CATCHING_UP.format(url=receiver.url, runs=runs_file), "eight"
    )
    assert late.returncode == 1
    due = clocked.ls()["eight"]["health"]["late"]
    clocked.start_machine(resident)
    runs = clocked.runs_until(
        "eight", lambda runs: any(r["tick"] == due and r["status"] == "ok" for r in runs)
    )
    caught = [r for r in runs if r["tick"] == due]
    assert [r["status"] for r in caught] == ["ok"]
    assert caught[0]["started"] > due  # it ran late, when the resident came back
    assert not [r for r in runs if r["status"] == "missed"]
    healthy = clocked.check()
    assert (healthy.returncode, healthy.stdout) == (0, "all 1 schedule healthy\n")
    # Exactly once: each run appends its tick to a file; no tick ran twice.
    ran = [float(t) for t in (clocked.folder / "caught-up-runs").read_text().split()]
    assert len(ran) == len(set(ran)) and ran.count(due) == 1
    assert len(first) >= 1 and receiver.posts == []  # a tick caught up is no missed run


@pytest.mark.slow
@pytest.mark.timeout(6 * WAIT_S)
def test_a_resident_killed_across_ticks_alerts_the_miss_once_and_catches_up_the_latest_once(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, receiver: Receiver
) -> None:
    # Killed, the resident is restarted by its policy only 18 s later: two or three ticks.
    clocked = clocked_deployment(
        make_emulator, tmp_path, restart_backoff_s=18.0, restart_backoff_max_s=18.0
    )
    runs_file = str(clocked.folder / "caught-up-runs")
    clocked.write("catching.py", CATCHING_UP.format(url=receiver.url, runs=runs_file))
    clocked.cli("deploy", "catching.py")
    resident = clocked.only_machine()
    clocked.runs_until("eight", lambda runs: any(r["status"] == "ok" for r in runs))
    clocked.kill_machine(resident)
    late = clocked.check_says("late")
    assert late.returncode == 1 and late.stdout.startswith("eight (catching:eight): late (due ")
    runs = clocked.runs_until("eight", lambda runs: any(r["status"] == "missed" for r in runs))
    missed = [r["tick"] for r in runs if r["status"] == "missed"]
    assert 1 <= len(missed) <= 2
    assert all(r["reason"] == "the scheduler was down" for r in runs if r["status"] == "missed")
    # The latest tick missed runs once, as soon as the resident is back.
    latest = missed[-1] + 8 * HOUR
    runs = clocked.runs_until(
        "eight", lambda runs: any(r["tick"] == latest and r["status"] == "ok" for r in runs)
    )
    assert [r["status"] for r in runs if r["tick"] == latest] == ["ok"]
    ran = [float(t) for t in (clocked.folder / "caught-up-runs").read_text().split()]
    assert len(ran) == len(set(ran)) and ran.count(latest) == 1
    assert not set(missed) & set(ran)
    # The ticks not run are alerted, once, and shown by ls; the schedule is healthy again.
    (alert,) = eventually(receiver.alerts, "the missed alert arrived", WAIT_S)
    assert (alert["status"], alert["missed_ticks"]) == ("missed", missed)
    shown = clocked.cli("ls").stdout
    assert re.search(r"  missed +0\.00s  the scheduler was down\n", shown), shown
    assert clocked.check_says("healthy").returncode == 0
    assert len(receiver.posts) == 1
    clocked.http.close()
