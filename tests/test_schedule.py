"""Scheduled functions end to end: ``flyjobs schedule …`` run as a user runs it (a process of its
own) against a standalone emulator whose schedules run ``--time-scale`` times as fast.

Nothing here waits on a wall-clock window: each test waits, with a generous bound, for state
the runs leave behind (run records in the machines' logs, machine events).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import textwrap
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _waiting import eventually
from cronsim import CronSim

import flyjobs
from flyjobs._declare.schedule import check_cron
from flyjobs.emulator import RunningEmulator

APP = "flyjobs-sched"
#: The app secret results of `schedule run` are authenticated with; the CLI holds it too.
RESULT_KEY = "sched-result-key-0123456789abcdef"
#: One scaled hour per real second.
HOUR_PER_S = 3600.0
#: Bound (s) of every wait for runs; generous for a loaded 2-core machine.
WAIT_S = 90.0

# Each test drives a standalone emulator through scaled hours: slow as a suite (about a minute),
# so it runs in the explicit slow run.
pytestmark = [pytest.mark.timeout(4 * WAIT_S), pytest.mark.slow]


class Deployment:
    """A standalone emulator with an app, and the CLI pointed at it as at Fly."""

    def __init__(self, emulator: RunningEmulator, folder: Path) -> None:
        self.emulator = emulator
        self.folder = folder
        self.http = httpx.Client(
            base_url=emulator.url, headers={"Authorization": f"Bearer {emulator.token}"}
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY", "FLYJOBS"))}
        return {
            **env,
            "FLY_API_TOKEN": self.emulator.token,
            "FLY_API_HOSTNAME": self.emulator.url,
            "FLY_APP": APP,
            "FLYJOBS_IMAGE": "registry.fly.io/flyjobs-sched:latest",
            "FLYJOBS_INBOX_HOST": "127.0.0.1",
            "FLYJOBS_INBOX_BIND": "127.0.0.1",
            "FLYJOBS_RESULT_KEY": RESULT_KEY,
        }

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "flyjobs", "schedule", *args],
            cwd=self.folder,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli(
        self, *args: str, ok: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "flyjobs", "schedule", *args],
            cwd=self.folder,
            env=self.env() if env is None else env,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    def write(self, name: str, source: str) -> str:
        (self.folder / name).write_text(textwrap.dedent(source))
        return name

    def ls(self) -> dict[str, dict[str, Any]]:
        out = self.cli("ls", "--json", "--runs", "1000").stdout
        rows = [json.loads(line) for line in out.splitlines()]
        return {row["name"]: row for row in rows}

    def machines(self) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/apps/{APP}/machines")
        response.raise_for_status()
        machines: list[dict[str, Any]] = response.json()
        return machines

    def machine(self, machine_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/apps/{APP}/machines/{machine_id}")
        response.raise_for_status()
        machine: dict[str, Any] = response.json()
        return machine

    def make_app(self) -> None:
        """Create the app ``APP`` on the emulator, with ``RESULT_KEY`` as its result key."""
        created = self.http.post("/v1/apps", json={"app_name": APP, "org_slug": "personal"})
        assert created.is_success
        secret = {"value": RESULT_KEY}
        assert self.http.post(f"/v1/apps/{APP}/secrets/FLYJOBS_RESULT_KEY", json=secret).is_success

    def runs_until(
        self, name: str, done: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        """The runs `ls` shows for `name`, once `done` holds of them (bounded by WAIT_S)."""
        seen: list[dict[str, Any]] = []

        def runs() -> list[dict[str, Any]] | None:
            row = self.ls().get(name)
            seen[:] = row["runs"] if row else []
            return seen if done(seen) else None

        try:
            return eventually(runs, f"the runs of {name} got there", WAIT_S)
        except AssertionError as exc:
            raise AssertionError(f"runs of {name} never got there: {seen}") from exc


@pytest.fixture
def deployment(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> Iterator[Deployment]:
    emulator = make_emulator(time_scale=HOUR_PER_S)
    deployment = Deployment(emulator, tmp_path)
    deployment.make_app()
    yield deployment
    deployment.http.close()


def finished(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for run in runs if run["status"] != "skipped"]


JOBS = """
    import flyjobs

    @flyjobs.remote(schedule="hourly")
    def tick() -> str:
        return "tick"

    @flyjobs.remote(schedule="daily", schedule_args=(6,), schedule_kwargs={"times": 7})
    def report(base: int, times: int) -> int:
        print("building the report")
        return base * times

    @flyjobs.remote(schedule="weekly")
    def broken() -> None:
        raise ValueError("the feed is down (42)")
"""


def test_an_hourly_job_runs_once_per_scaled_hour(deployment: Deployment) -> None:
    deployment.write("jobs.py", JOBS)
    deployment.cli("deploy", "jobs.py")
    runs = deployment.runs_until("tick", lambda runs: len(finished(runs)) >= 5)
    # Fly starts the machine at creation, then once an hour counted from creation; a tick that
    # came while a run was still going (a loaded host) is recorded as skipped, never lost.
    starts = [run["started"] for run in runs]
    hours = [(b - a) / 3600 for a, b in zip(starts, starts[1:], strict=False)]
    assert all(0.5 < gap < 1.5 for gap in hours), hours
    assert all(run["status"] in ("ok", "skipped") for run in runs), runs
    assert {run["value"] for run in finished(runs)} == {"'tick'"}
    # Over the scaled period from the first run to the last: one run per hour, none twice.
    period_h = (starts[-1] - starts[0]) / 3600
    assert len(runs) == round(period_h) + 1
    # The daily and weekly jobs ran once, at creation, in the same period.
    rows = deployment.ls()
    assert len(finished(rows["report"]["runs"])) == 1
    assert rows["tick"]["next_due"] > starts[-1]


def test_a_failing_run_shows_in_ls_with_its_message(deployment: Deployment) -> None:
    deployment.write("jobs.py", JOBS)
    deployment.cli("deploy", "jobs.py")
    runs = deployment.runs_until("broken", lambda runs: bool(runs))
    assert runs[0]["status"] == "failed"
    assert runs[0]["error"] == "builtins.ValueError: the feed is down (42)"
    table = deployment.cli("ls").stdout
    assert "failed" in table and "ValueError: the feed is down (42)" in table
    logs = deployment.cli("logs", "jobs:broken").stdout
    assert "the feed is down (42)" in logs


def test_a_run_that_prints_a_run_record_shows_its_real_outcome(deployment: Deployment) -> None:
    deployment.write(
        "liar.py",
        """
        import json
        import flyjobs

        @flyjobs.remote(schedule="weekly")
        def liar() -> None:
            fake = {"status": "ok", "started": 4102444800.0, "value": "'all good'"}
            print("flyjobs-run " + json.dumps(fake))
            raise ValueError("it failed")
        """,
    )
    deployment.cli("deploy", "liar.py")
    # The printed line comes before the real record in the machine's log.
    runs = deployment.runs_until("liar", lambda runs: any(r["status"] == "failed" for r in runs))
    assert [(run["status"], run["error"]) for run in runs] == [
        ("failed", "builtins.ValueError: it failed")
    ]
    assert "flyjobs-run {" in deployment.cli("logs", "liar").stdout  # shown as its line


def test_redeploying_a_changed_function_updates_its_machine(deployment: Deployment) -> None:
    deployment.write("jobs.py", JOBS)
    first = deployment.cli("deploy", "jobs.py").stdout
    assert first.split() == ["created", "tick", "created", "report", "created", "broken"]
    again = deployment.cli("deploy", "jobs.py").stdout
    assert again.split() == ["unchanged", "tick", "unchanged", "report", "unchanged", "broken"]
    before = {m["name"]: m for m in deployment.machines()}

    deployment.write("jobs.py", JOBS.replace("schedule_args=(6,)", "schedule_args=(5,)"))
    changed = deployment.cli("deploy", "jobs.py").stdout.splitlines()
    # The module changed: each of its functions' machines carries the new code (code sync).
    assert changed == ["updated    tick", "updated    report", "updated    broken"]
    after = {m["name"]: m for m in deployment.machines()}
    assert sorted(after) == sorted(before)  # no second machine
    report = after["fjs-jobs-report"]
    assert report["id"] == before["fjs-jobs-report"]["id"]
    assert report["instance_id"] != before["fjs-jobs-report"]["instance_id"]
    assert deployment.cli("run", "report").stdout.splitlines()[-1] == "35"


def test_a_scheduled_function_runs_the_code_it_was_deployed_with(deployment: Deployment) -> None:
    # The image has neither module: the deployed machine's config carries them (code sync).
    deployment.write("rates.py", "def rate():\n    return 3\n")
    deployment.write(
        "billing.py",
        """
        import flyjobs
        import rates

        @flyjobs.remote(schedule="daily")
        def bill() -> int:
            return 10 * rates.rate()
        """,
    )
    assert deployment.cli("deploy", "billing.py").stdout.split() == ["created", "bill"]
    assert deployment.cli("run", "bill").stdout.splitlines()[-1] == "30"
    # An edit of a module the function imports is a changed deploy, and runs from then on.
    deployment.write("rates.py", "def rate():\n    return 4\n")
    assert deployment.cli("deploy", "billing.py").stdout.split() == ["updated", "bill"]
    assert deployment.cli("run", "bill").stdout.splitlines()[-1] == "40"
    # With code="image" nothing ships: the image (here, the installed distributions) lacks it.
    deployment.write(
        "billing.py",
        (deployment.folder / "billing.py")
        .read_text()
        .replace('schedule="daily"', 'schedule="daily", code="image"'),
    )
    assert deployment.cli("deploy", "billing.py").stdout.split() == ["updated", "bill"]
    failed = deployment.cli("run", "bill", ok=False)
    assert "No module named 'billing'" in failed.stderr


def test_deploy_creates_the_machine_in_the_functions_region(deployment: Deployment) -> None:
    source = """
        import flyjobs

        import os

        @flyjobs.remote(schedule="daily", region="ams")
        def report() -> str:
            return os.environ["FLY_REGION"]
    """
    deployment.write("jobs.py", source)
    assert deployment.cli("deploy", "jobs.py").stdout.split() == ["created", "report"]
    (machine,) = deployment.machines()
    assert machine["region"] == "ams"
    # `schedule run` runs it now on an ephemeral machine of the deployed options: region too.
    assert deployment.cli("run", "report").stdout.splitlines()[-1] == "'ams'"

    # Fly cannot move a machine: another region is a new machine there, the old one gone.
    deployment.write("jobs.py", source.replace('region="ams"', 'region="fra"'))
    assert deployment.cli("deploy", "jobs.py").stdout.split() == ["updated", "report"]
    (moved,) = deployment.machines()
    assert (moved["region"], moved["name"]) == ("fra", "fjs-jobs-report")
    assert moved["id"] != machine["id"]
    assert deployment.cli("deploy", "jobs.py").stdout.split() == ["unchanged", "report"]


def test_deploy_takes_the_settings_defaults_a_function_leaves_unset(
    deployment: Deployment,
) -> None:
    deployment.write("jobs.py", JOBS)
    deployment.write("pyproject.toml", "[tool.flyjobs]\nmemory_mb = 512\n")
    deployment.cli("deploy", "jobs.py", env={**deployment.env(), "FLYJOBS_REGION": "fra"})
    machines = deployment.machines()
    assert {(m["region"], m["config"]["guest"]["memory_mb"]) for m in machines} == {("fra", 512)}


def test_concurrent_deploys_are_serialized_by_the_lease(deployment: Deployment) -> None:
    deployment.write("jobs.py", JOBS)
    deployment.cli("deploy", "jobs.py")
    # The daily job's machine: it runs once per 24 s here, so its events stay few.
    report_id = next(m["id"] for m in deployment.machines() if m["name"] == "fjs-jobs-report")
    lease = deployment.http.post(
        f"/v1/apps/{APP}/machines/{report_id}/lease", json={"ttl": 120, "description": "other"}
    )
    nonce = lease.json()["data"]["nonce"]
    version = deployment.machine(report_id)["instance_id"]

    deployment.write("jobs.py", JOBS.replace("return base * times", "return base * times + 1"))
    waiting = deployment.start("deploy", "jobs.py")
    assert waiting.stdout is not None
    line = waiting.stdout.readline()  # the deploy says it waits for the lease...
    assert "leased by another deploy; waiting" in line
    assert deployment.machine(report_id)["instance_id"] == version  # ...and has not touched it
    released = deployment.http.delete(
        f"/v1/apps/{APP}/machines/{report_id}/lease",
        headers={"fly-machine-lease-nonce": nonce},
    )
    assert released.is_success
    out, err = waiting.communicate(timeout=WAIT_S)
    assert waiting.returncode == 0, err
    assert "updated    report" in out
    assert deployment.machine(report_id)["instance_id"] != version

    # Two deploys at once, of two versions: both land, one after the other, on one machine.
    for folder, value in (("one", "1"), ("two", "2")):
        (deployment.folder / folder).mkdir()
        source = JOBS.replace("return base * times", f"return {value}")
        deployment.write(f"{folder}/jobs.py", source)
    both = [deployment.start("deploy", "one/jobs.py"), deployment.start("deploy", "two/jobs.py")]
    results = [p.communicate(timeout=WAIT_S) for p in both]
    assert [p.returncode for p in both] == [0, 0], results
    assert all("updated    report" in out for out, _ in results)
    assert [m["name"] for m in deployment.machines()].count("fjs-jobs-report") == 1
    events = deployment.machine(report_id)["events"]
    assert sum(1 for e in events if e["type"] == "update") == 3


def test_prune_removes_exactly_the_dropped_functions(deployment: Deployment) -> None:
    deployment.write("jobs.py", JOBS)
    deployment.write(
        "other.py",
        """
        import flyjobs

        @flyjobs.remote(schedule="monthly")
        def invoices() -> None: ...
        """,
    )
    deployment.cli("deploy", "jobs.py")
    deployment.cli("deploy", "other.py")
    deployment.write("jobs.py", JOBS.split('@flyjobs.remote(schedule="daily"')[0])

    kept = deployment.cli("deploy", "jobs.py").stdout
    assert "stale" in kept and "report" in kept and "broken" in kept
    assert sorted(deployment.ls()) == ["broken", "invoices", "report", "tick"]

    pruned = deployment.cli("deploy", "jobs.py", "--prune").stdout.splitlines()
    assert sorted(line.split()[1] for line in pruned if line.startswith("pruned")) == [
        "broken",
        "report",
    ]
    assert sorted(deployment.ls()) == ["invoices", "tick"]
    assert sorted(m["name"] for m in deployment.machines()) == [
        "fjs-jobs-tick",
        "fjs-other-invoices",
    ]


def test_a_cron_schedule_fires_at_its_ticks(deployment: Deployment) -> None:
    # Every 2 hours on the half hour of Kolkata (UTC+05:30): ticks at :00 UTC, odd hours.
    deployment.write(
        "cronjobs.py",
        """
        import flyjobs

        @flyjobs.remote(schedule=flyjobs.Cron("30 */2 * * *", tz="Asia/Kolkata"))
        def nightly() -> str:
            return "ran"
        """,
    )
    deployment.cli("deploy", "cronjobs.py")
    runs = deployment.runs_until("nightly", lambda runs: len(finished(runs)) >= 3)
    tz = zoneinfo.ZoneInfo("Asia/Kolkata")
    for run in finished(runs):
        assert run["status"] == "ok"
        assert run["started"] >= run["tick"]
    ticks = [run["tick"] for run in runs]
    for tick in ticks:
        local = dt.datetime.fromtimestamp(tick, tz)
        assert (local.minute, local.second, local.hour % 2) == (30, 0, 0), local
    # Consecutive ticks of the expression: none missed (a skip is recorded), none run twice.
    for previous, current in zip(ticks, ticks[1:], strict=False):
        expected = next(CronSim("30 */2 * * *", dt.datetime.fromtimestamp(previous, tz)))
        assert current == expected.timestamp()
    row = deployment.ls()["nightly"]
    assert row["schedule"] == "cron 30 */2 * * * (Asia/Kolkata)"
    assert row["next_due"] > ticks[-1]


def test_overlapping_runs_skip_the_tick_and_record_it(deployment: Deployment) -> None:
    deployment.write(
        "slow.py",
        """
        import time
        import flyjobs

        @flyjobs.remote(schedule=flyjobs.Cron("0 * * * *"))
        def slow() -> None:
            time.sleep(1.6)  # 1.6 scaled hours
        """,
    )
    deployment.cli("deploy", "slow.py")
    runs = deployment.runs_until("slow", lambda runs: len(finished(runs)) >= 2)
    skipped = [run for run in runs if run["status"] == "skipped"]
    assert skipped, runs
    ticks = [run["tick"] for run in runs]
    assert ticks == sorted(set(ticks))  # each tick once: run or skipped
    assert all(b - a == 3600 for a, b in zip(ticks, ticks[1:], strict=False)), ticks


def test_schedule_run_returns_the_result(deployment: Deployment) -> None:
    deployment.write("jobs.py", JOBS)
    deployment.cli("deploy", "jobs.py")
    done = deployment.cli("run", "report")
    assert done.stdout.strip().splitlines()[-1] == "42"
    assert "building the report" in done.stdout
    failed = deployment.cli("run", "jobs:broken", ok=False)
    assert failed.returncode == 1
    # The function's exception with its remote traceback, and no traceback of the command's.
    assert failed.stderr.startswith("Error: ValueError: the feed is down (42)")
    assert "Remote traceback:" in failed.stderr
    assert 'raise ValueError("the feed is down (42)")' in failed.stderr
    assert failed.stderr.count("Traceback (most recent call last)") == 1
    # An ephemeral machine: it is gone, the scheduled ones stay.
    eventually(lambda: len(deployment.machines()) == 3, "the ephemeral machine gone", WAIT_S)
    assert sorted(m["name"] for m in deployment.machines()) == [
        "fjs-jobs-broken",
        "fjs-jobs-report",
        "fjs-jobs-tick",
    ]


def test_rm_removes_exactly_that_one(deployment: Deployment) -> None:
    deployment.write("jobs.py", JOBS)
    deployment.cli("deploy", "jobs.py")
    assert deployment.cli("rm", "report").stdout.startswith("removed jobs:report")
    assert sorted(deployment.ls()) == ["broken", "tick"]
    missing = deployment.cli("rm", "report", ok=False)
    assert missing.returncode == 1 and "no scheduled function 'report'" in missing.stderr


def test_bad_targets_are_clear_errors_without_a_traceback(deployment: Deployment) -> None:
    for target, message in [
        ("missing.py", "no such file: missing.py"),
        ("no_such_module", "'no_such_module' is neither a .py file nor an importable module"),
    ]:
        done = deployment.cli("deploy", target, ok=False)
        assert done.returncode == 1
        assert message in done.stderr and "Traceback" not in done.stderr
    deployment.write("boom.py", "raise RuntimeError('config missing')\n")
    done = deployment.cli("deploy", "boom.py", ok=False)
    assert "RuntimeError: config missing" in done.stderr and "Traceback" not in done.stderr
    deployment.write(
        "args.py",
        """
        import flyjobs

        @flyjobs.remote(schedule="hourly")
        def needs(x: int) -> int:
            return x
        """,
    )
    done = deployment.cli("deploy", "args.py", ok=False)
    assert "schedule_args" in done.stderr and "Traceback" not in done.stderr
    assert deployment.machines() == []


def test_schedule_options_are_checked_when_decorated() -> None:
    with pytest.raises(flyjobs.ConfigError) as exc:
        flyjobs.remote(schedule="every minute")
    for valid in ("'hourly'", "'daily'", "'weekly'", "'monthly'", "flyjobs.Cron("):
        assert valid in str(exc.value)
    with pytest.raises(flyjobs.ConfigError, match="5 fields"):
        flyjobs.Cron("0 3 * *")
    with pytest.raises(flyjobs.ConfigError, match="pass schedule="):
        flyjobs.remote(schedule_args=(1,))
    with pytest.raises(flyjobs.ConfigError, match="Bad hour"):
        check_cron(flyjobs.Cron("0 25 * * *"))
    with pytest.raises(flyjobs.ConfigError, match="unknown time zone 'Mars/Olympus'"):
        check_cron(flyjobs.Cron("0 3 * * *", tz="Mars/Olympus"))
    options = flyjobs.remote(schedule=flyjobs.Cron("0  3 * * *", tz="Europe/Paris"))(abs).options
    assert options.schedule == flyjobs.Cron("0 3 * * *", tz="Europe/Paris")


def test_retries_rerun_a_crashed_run_and_ls_shows_crashes(deployment: Deployment) -> None:
    # Kept outside the machine: its root (the unpacked code with it) is reset at each start.
    count = str(deployment.folder / "attempts")
    deployment.write(
        "crashy.py",
        f"""
        import os
        import pathlib
        import flyjobs

        COUNT = pathlib.Path({count!r})

        @flyjobs.remote(schedule="weekly", retries=1)
        def flaky() -> int:
            attempts = int(COUNT.read_text()) + 1 if COUNT.exists() else 1
            COUNT.write_text(str(attempts))
            if attempts == 1:
                os._exit(3)  # the machine dies without a result: Fly restarts it once
            return attempts

        @flyjobs.remote(schedule="weekly")
        def dies() -> None:
            os._exit(4)
        """,
    )
    deployment.cli("deploy", "crashy.py")
    runs = deployment.runs_until("flaky", lambda runs: any(r["status"] == "ok" for r in runs))
    assert [(r["status"], r["value"]) for r in runs] == [("crashed", ""), ("ok", "2")]
    assert "exit code 3" in runs[0]["error"]
    died = deployment.runs_until("dies", lambda runs: bool(runs))
    assert died[0]["status"] == "crashed" and "exit code 4" in died[0]["error"]


def test_a_fly_scheduled_run_that_outlasts_its_hour_records_the_skipped_tick(
    deployment: Deployment,
) -> None:
    deployment.write(
        "slowly.py",
        """
        import time
        import flyjobs

        @flyjobs.remote(schedule="hourly")
        def slowly() -> None:
            time.sleep(1.5)  # 1.5 scaled hours: Fly does not start the machine at the next tick
        """,
    )
    deployment.cli("deploy", "slowly.py")
    runs = deployment.runs_until("slowly", lambda runs: len(finished(runs)) >= 2)
    first, skipped = runs[0], runs[1]
    assert first["status"] == "ok" and skipped["status"] == "skipped"
    assert skipped["tick"] == first["tick"] + 3600


def test_a_cron_run_that_crashes_is_retried_in_its_resident(deployment: Deployment) -> None:
    deployment.write(
        "cronflaky.py",
        """
        import os
        import pathlib
        import flyjobs

        COUNT = pathlib.Path(__file__).with_name("cron-attempts")

        @flyjobs.remote(schedule=flyjobs.Cron("0 */3 * * *"), retries=2)
        def flaky() -> int:
            attempts = int(COUNT.read_text()) + 1 if COUNT.exists() else 1
            COUNT.write_text(str(attempts))
            if attempts < 3:
                os._exit(3)
            return attempts
        """,
    )
    deployment.cli("deploy", "cronflaky.py")
    runs = deployment.runs_until("flaky", lambda runs: bool(finished(runs)))
    assert [(run["status"], run["value"]) for run in finished(runs)][0] == ("ok", "3")


def test_schedule_commands_touch_only_machines_flyjobs_deployed(deployment: Deployment) -> None:
    def create(name: str, metadata: dict[str, str]) -> dict[str, Any]:
        config = {
            "image": "postgres:16",
            "env": {"PGDATA": "/data"},
            "init": {"exec": ["python", "-c", "import time; time.sleep(600)"]},
            "metadata": metadata,
        }
        made = deployment.http.post(
            f"/v1/apps/{APP}/machines", json={"name": name, "config": config}
        )
        assert made.status_code == 200, made.text
        machine: dict[str, Any] = made.json()
        return machine

    # A foreign machine carrying only the schedule key, and a look-alike with every key
    # flyjobs writes (its seal forged), both naming functions of the module deployed below.
    only_key = create("pg-main", {"flyjobs_schedule": "jobs:tick"})
    look_alike = create(
        "pg-replica",
        {
            "flyjobs_schedule": "jobs:gone",
            "flyjobs_module": "jobs",
            "flyjobs_schedule_spec": "hourly",
            "flyjobs_digest": "0" * 32,
            "flyjobs_function": "jobs:gone",
            "flyjobs_schedule_seal": "0" * 64,
        },
    )
    foreign = {only_key["id"]: only_key, look_alike["id"]: look_alike}
    deployment.write("jobs.py", JOBS)
    assert deployment.cli("deploy", "jobs.py", "--prune").stdout.split() == [
        "created", "tick", "created", "report", "created", "broken",
    ]  # fmt: skip
    assert sorted(deployment.ls()) == ["broken", "report", "tick"]
    missing = deployment.cli("rm", "gone", ok=False)
    assert "no scheduled function 'gone'" in missing.stderr
    for machine_id, before in foreign.items():
        after = deployment.machine(machine_id)
        assert after["state"] == "started"
        assert after["config"] == before["config"]  # image, env, metadata: untouched

    # A foreign machine that holds a function's machine name: a clear error, left alone.
    squatter = create("fjs-other-invoices", {"flyjobs_schedule": "other:invoices"})
    deployment.write(
        "other.py",
        """
        import flyjobs

        @flyjobs.remote(schedule="monthly")
        def invoices() -> None: ...
        """,
    )
    refused = deployment.cli("deploy", "other.py", ok=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "fjs-other-invoices" in refused.stderr and "did not deploy it" in refused.stderr
    assert deployment.machine(squatter["id"])["config"] == squatter["config"]


def test_the_traceback_of_a_failed_run_is_kept_and_shown(deployment: Deployment) -> None:
    deployment.write(
        "etl.py",
        """
        import flyjobs

        def load(rows: int) -> None:
            if not rows:
                raise ValueError("upstream returned 0 rows\\x1b]0;pwned\\x07\\x1b[2J")

        @flyjobs.remote(schedule="weekly")
        def nightly_etl() -> None:
            print("loading")
            load(0)
        """,
    )
    deployment.cli("deploy", "etl.py")
    (run,) = deployment.runs_until("nightly_etl", lambda runs: bool(runs))
    assert run["status"] == "failed"
    assert run["traceback"].startswith("Traceback (most recent call last):")
    assert "in load" in run["traceback"] and "raise ValueError(" in run["traceback"]
    # Its own frames first (the file is in the machine's unpacked bundle, under /flyjobs/code).
    first_frame = run["traceback"].split("etl.py")[0]
    assert "site-packages" not in first_frame and "flyjobs/_" not in first_frame

    table = deployment.cli("ls", "-v").stdout
    assert "in load" in table and "last failure" in table
    logs = deployment.cli("logs", "nightly_etl").stdout.splitlines()
    assert "loading" in logs
    # The run's record as one readable line, in local time with its offset: no raw record.
    (record,) = [line for line in logs if "  failed  " in line]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d  failed  ", record), record
    assert "builtins.ValueError: upstream returned 0 rows" in record
    assert not any(line.startswith("flyjobs-run ") for line in logs)
    start = next(i for i, line in enumerate(logs) if line.startswith("Traceback of the last"))
    tail = logs[start:]
    assert tail[1] == "Traceback (most recent call last):" and "in load" in "\n".join(tail)
    # What the function raised reaches no terminal as escapes (issue 23.8).
    for out in (table, "\n".join(logs), deployment.cli("ls").stdout):
        assert "\x1b" not in out and "\x07" not in out
        assert "rows\\x1b]0;pwned\\x07" in out


def test_flyjobs_dev_needs_no_inbox_host_nor_result_key(deployment: Deployment) -> None:
    # An app with no result key yet, and none of the settings a caller on Fly needs for results.
    fresh = "flyjobs-fresh"
    assert deployment.http.post("/v1/apps", json={"app_name": fresh, "org_slug": "personal"})
    unset = ("FLYJOBS_INBOX_HOST", "FLYJOBS_INBOX_BIND", "FLYJOBS_RESULT_KEY")
    env = {k: v for k, v in deployment.env().items() if k not in unset}
    env["FLY_APP"] = fresh
    deployment.write("jobs.py", JOBS)
    deployment.cli("deploy", "jobs.py", env=env)
    secrets = deployment.http.get(f"/v1/apps/{fresh}/secrets").json()["secrets"]
    assert [s["name"] for s in secrets] == ["FLYJOBS_RESULT_KEY"]  # set as local mode does
    # The machines are local processes: the inbox is on 127.0.0.1 without being told.
    assert deployment.cli("run", "report", env=env).stdout.splitlines()[-1] == "42"
    missing = deployment.cli("run", "nosuch", env=env, ok=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "no scheduled function 'nosuch': it is not deployed in app 'flyjobs-fresh'" in (
        missing.stderr
    )
    assert "jobs:broken, jobs:report, jobs:tick" in missing.stderr
    assert "WireGuard" not in missing.stderr and "storage" not in missing.stderr

    doctor = subprocess.run(
        [sys.executable, "-m", "flyjobs", "doctor", "--secret", "DATABASE_URL"],
        cwd=deployment.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert "PASS  results: inbox listens on 127.0.0.1" in doctor.stdout, doctor.stdout
    assert "FAIL  secrets: 'flyjobs-fresh' lacks DATABASE_URL" in doctor.stdout
    api = deployment.emulator.url.rstrip("/")
    assert f"{api}/v1/apps/{fresh}/secrets/DATABASE_URL" in doctor.stdout
    assert "fly secrets set" not in doctor.stdout
