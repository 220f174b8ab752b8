"""The ``flyjobs`` commands, run as a user runs them (a subprocess), against a standalone emulator
standing in for ``flyjobs dev`` or Fly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cli_funcs
import click
import httpx
import pytest
from _fly_helpers import APP, RESULT_KEY, fly_env
from click.testing import CliRunner

import flyjobs as flyjobs_pkg
from flyjobs._calls.runtime import get_runtime
from flyjobs.cli import cli
from flyjobs.emulator import RunningEmulator

SUPPORT = Path(__file__).resolve().parent / "_support"
SLEEPER = ["python", "-c", "import time; time.sleep(120)"]
PRINT_AND_EXIT = ["python", "-c", "print('hello from a late machine')"]


def flyjobs(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``flyjobs ARGS...`` in a fresh process with ``env`` as its whole flyjobs setting."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    return subprocess.run(
        [sys.executable, "-m", "flyjobs", *args],
        env={**base, **env},
        cwd=cwd or SUPPORT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def fly(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    yield from fly_env(make_emulator(), monkeypatch)


def _api(env: dict[str, str]) -> httpx.Client:
    headers = {"Authorization": f"Bearer {env['FLY_API_TOKEN']}"}
    return httpx.Client(base_url=env["FLY_API_HOSTNAME"], headers=headers, timeout=30)


def _create(env: dict[str, str], metadata: dict[str, str], argv: list[str] = SLEEPER) -> str:
    """A machine running ``argv`` (default: it sleeps), with ``metadata``, made directly through
    the API."""
    config = {"image": "sleeper", "init": {"exec": argv}, "metadata": metadata}
    with _api(env) as http:
        response = http.post(f"/v1/apps/{APP}/machines", json={"config": config})
        assert response.status_code == 200, response.text
        machine_id: str = response.json()["id"]
        http.get(f"/v1/apps/{APP}/machines/{machine_id}/wait", params={"state": "started"})
    return machine_id


def _states(env: dict[str, str]) -> dict[str, str]:
    with _api(env) as http:
        machines = http.get(f"/v1/apps/{APP}/machines").json()
    return {m["id"]: m["state"] for m in machines}


# -- every command ---------------------------------------------------------------------------


def _leaf_commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, (*path, name))
        else:
            yield (*path, name)


@pytest.mark.parametrize("command", [" ".join(c) for c in _leaf_commands(cli)])
def test_every_command_has_help_with_an_example(command: str) -> None:
    # Every command, those of `schedule` and `batch` and `dev` too, found from the CLI itself.
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert f"flyjobs {command}" in result.output.split("Example:")[1]


@pytest.mark.parametrize(
    "args", [["schedule", "ls", "--runs", "-1"], ["schedule", "logs", "job", "-n", "0"]]
)
def test_counts_below_their_range_are_refused(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "Invalid value for" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["ls"], ["logs", "fj-0"], ["gc"]])
def test_commands_without_an_api_say_how_to_get_one(command: list[str]) -> None:
    result = flyjobs(*command, env={})
    assert result.returncode == 1
    assert "flyjobs dev" in result.stderr and "FLY_API_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_refused_token_is_one_line_without_the_token(fly: dict[str, str]) -> None:
    result = flyjobs("ls", env={**fly, "FLY_API_TOKEN": "wrong-token-123"})
    assert result.returncode == 1
    assert "401" in result.stderr and "Traceback" not in result.stderr
    assert "wrong-token-123" not in result.stderr


# -- run -------------------------------------------------------------------------------------


def test_run_prints_the_result(fly: dict[str, str]) -> None:
    result = flyjobs("run", "cli_funcs.py::square", "7", env=fly)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "49\n"


def test_run_on_the_embedded_emulator_needs_no_settings(tmp_path: Path) -> None:
    script = tmp_path / "jobs.py"
    script.write_text("def shout(word):\n    return word.upper() + '!'\n")
    result = flyjobs("run", f"{script}::shout", "hey", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "HEY!"


def test_run_a_file_inside_a_package_imports_it_as_the_package_s_module(tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (package / "jobs.py").write_text(
        "from mypkg.helpers import double\nfrom .helpers import double as again\n\n"
        "def process(x):\n    return double(x) + again(x) + (__name__ == 'mypkg.jobs')\n"
    )
    result = flyjobs("run", "mypkg/jobs.py::process", "3", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "13\n"  # as `flyjobs run mypkg.jobs::process 3` gives


def test_run_a_module_function_that_is_not_decorated(fly: dict[str, str]) -> None:
    result = flyjobs("run", "cli_funcs::plain", "abc", env=fly)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "ABC"


def test_run_map_reads_json_lines(fly: dict[str, str], tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('3\n[4]\n\n{"x": 5}\n')
    result = flyjobs("run", "cli_funcs.py::square", "--map", str(inputs), env=fly)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["9", "16", "25"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cli_funcs.py"], "FILE_OR_MODULE::FUNCTION"),
        (["missing.py::f"], "no such file: missing.py"),
        (["no_such_module::f"], "neither a .py file nor an importable module"),
        (["cli_funcs.py::nope"], "has no function 'nope'"),
        (["cli_funcs.py::square", "--map", "missing.jsonl"], "cannot read missing.jsonl"),
        (["cli_funcs.py::square", "'a'"], "TypeError"),  # the function's own, remote
        (["cli_funcs.py::square"], "missing a required argument: 'x'"),
        (["cli_funcs.py::square", "1", "2"], "too many positional arguments"),
    ],
)
def test_run_bad_input_is_a_clear_error(fly: dict[str, str], args: list[str], message: str) -> None:
    result = flyjobs("run", *args, env=fly)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback (most recent call last)" not in result.stderr.split("Remote traceback")[0]


def test_run_map_names_a_bad_line(fly: dict[str, str], tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("1\n{oops\n")
    result = flyjobs("run", "cli_funcs.py::square", "--map", str(inputs), env=fly)
    assert result.returncode == 1
    assert "line 2 is not JSON" in result.stderr and "Traceback" not in result.stderr
    assert _states(fly) == {}  # checked before any machine


# -- ls --------------------------------------------------------------------------------------


def test_ls_lists_flyjobs_machines_only(fly: dict[str, str]) -> None:
    foreign = _create(fly, {})
    call = cli_funcs.hang.spawn(30)
    while call.machine_id is None or _states(fly).get(call.machine_id) != "started":
        time.sleep(0.02)
    listed = json.loads(flyjobs("ls", "--json", env=fly).stdout)
    assert [m["id"] for m in listed] == [call.machine_id]
    (mine,) = listed
    assert mine["call_id"] == call.id
    assert mine["function"] == "cli_funcs:hang"
    assert mine["state"] == "started"
    assert mine["region"] and mine["age_s"] >= 0
    table = flyjobs("ls", env=fly).stdout
    assert "MACHINE" in table and call.id in table and foreign not in table
    call.cancel()


def test_ls_shows_what_a_running_machine_has_cost(fly: dict[str, str], tmp_path: Path) -> None:
    shipped = Path(flyjobs_pkg.__file__).parent / "_cost" / "prices.toml"
    prices = tmp_path / "prices.toml"
    # shared-cpu-1x at $1 a second: its events' seconds show in cents.
    prices.write_text(
        shipped.read_text().replace('"shared-1-256" = 1.94', '"shared-1-256" = 2592000')
    )
    call = cli_funcs.hang.spawn(30)
    while call.machine_id is None or _states(fly).get(call.machine_id) != "started":
        time.sleep(0.02)
    env = {**fly, "FLYJOBS_PRICES": str(prices)}
    (mine,) = json.loads(flyjobs("ls", "--json", env=env).stdout)
    assert mine["cost_usd"] >= 0
    header, row = flyjobs("ls", env=env).stdout.splitlines()
    assert header.split()[-1] == "COST" and row.split()[-1].startswith("$")
    broken = flyjobs("ls", env={**fly, "FLYJOBS_PRICES": str(tmp_path / "none.toml")})
    assert broken.returncode == 1 and "none.toml" in broken.stderr
    call.cancel()


def test_ls_shows_the_pool_of_warm_machines(fly: dict[str, str]) -> None:
    pool = flyjobs_pkg.Pool(max=1, idle_s=60, name="cli-pool")
    try:
        assert cli_funcs.square.with_options(pool=pool).remote(3) == 9
        listed = json.loads(flyjobs("ls", "--json", env=fly).stdout)
        assert [m["pool"] for m in listed] == ["cli-pool"]
        header, row = flyjobs("ls", env=fly).stdout.splitlines()
        assert header.split()[2] == "POOL" and row.split()[2] == "cli-pool"
    finally:
        pool.shutdown()


# -- gc --------------------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.slow
def test_gc_destroys_exactly_the_strays(fly: dict[str, str]) -> None:
    import socket

    from flyjobs._calls.fleet import client_identity

    now = time.time()
    host = socket.gethostname()
    meta: dict[str, Any] = {"flyjobs_function": "jobs:work", "flyjobs_batch_id": ""}
    late = _create(
        fly, {**meta, "flyjobs_call_id": "fj-late", "flyjobs_deadline": str(int(now - 600))}
    )
    orphan = _create(
        fly,
        {
            **meta,
            "flyjobs_call_id": "fj-orphan",
            "flyjobs_deadline": str(int(now + 600)),
            "flyjobs_client": f"{host}/{_dead_pid()}/{int(now) - 5}",
        },
    )
    live = _create(
        fly,
        {
            **meta,
            "flyjobs_call_id": "fj-live",
            "flyjobs_deadline": str(int(now + 600)),
            "flyjobs_client": client_identity(),
        },
    )
    elsewhere = _create(
        fly, {**meta, "flyjobs_call_id": "fj-far", "flyjobs_client": "another-host/1/1"}
    )
    scheduled = _create(fly, {"flyjobs_function": "jobs:nightly"})
    foreign = _create(fly, {"owner": "someone else", "flyjobs_deadline": "1"})

    dry = flyjobs("gc", "--dry-run", env=fly)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert sorted(line.split()[2] for line in lines) == sorted([late, orphan])
    assert all(line.startswith("would destroy") for line in lines)
    assert "past its deadline" in dry.stdout and "is gone" in dry.stdout
    assert set(_states(fly).values()) == {"started"}

    done = flyjobs("gc", env=fly)
    assert done.returncode == 0, done.stderr
    assert sorted(line.split()[1] for line in done.stdout.splitlines()) == sorted([late, orphan])
    states = _states(fly)
    assert {states[m] for m in (live, elsewhere, scheduled, foreign)} == {"started"}
    assert states.get(late, "destroyed") == states.get(orphan, "destroyed") == "destroyed"
    assert "no stray" in flyjobs("gc", "--dry-run", env=fly).stdout


# -- logs ------------------------------------------------------------------------------------


def test_3000_printed_lines_all_reach_flyjobs_logs(fly: dict[str, str]) -> None:
    call = cli_funcs.print_lines.spawn(3000)
    assert call.result(timeout_s=60) == 3000
    result = flyjobs("logs", call.id, env=fly)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"line {i:05d} " + "x" * 60 for i in range(3000)]


def _machine_names() -> list[str]:
    runtime = get_runtime()
    machines = runtime.portal.call(lambda: runtime.client.list_machines(APP, include_deleted=True))
    return sorted(str(m.name) for m in machines)


@pytest.mark.slow  # a few seconds
def test_logs_of_each_input_of_a_batch_that_ran_on_reused_machines(
    fly: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    tags = ["a", "b", "c", "d", "e"]
    results = cli_funcs.print_lines.starmap(
        [(3, tag) for tag in tags], max_machines=2, output="live"
    )
    assert list(results) == [3] * len(tags)
    machines = _machine_names()
    batch = machines[0].rsplit("-", 1)[0]
    assert machines == [f"{batch}-m0", f"{batch}-m1"]  # five inputs, two machines
    expected = {
        f"{batch}-{i}": [f"{tag} {j:05d} " + "x" * 60 for j in range(3)]
        for i, tag in enumerate(tags)
    }
    # Live, each line came to the caller with its input's id, and no call mark with them.
    live = capsys.readouterr().out.splitlines()
    assert sorted(live) == sorted(
        f"[{c}] {line}" for c, lines in expected.items() for line in lines
    )
    for call_id, lines in expected.items():
        result = flyjobs("logs", call_id, env=fly)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == lines
    whole = flyjobs("logs", batch, env=fly)
    assert whole.returncode == 0, whole.stderr
    shown = whole.stdout.splitlines()
    assert sorted(shown) == sorted(
        f"[{c}] {line}" for c, lines in expected.items() for line in lines
    )
    for call_id, lines in expected.items():  # in order within each input
        assert [s for s in shown if s.startswith(f"[{call_id}] ")] == [
            f"[{call_id}] {line}" for line in lines
        ]


def test_schedule_run_takes_the_app_as_its_siblings_do(fly: dict[str, str]) -> None:
    result = flyjobs("schedule", "run", "-a", "elsewhere", "job", env=fly)
    assert result.returncode == 1
    assert 'Could not find App "elsewhere"' in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_cron_field_says_what_the_fields_take(fly: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "crons.py").write_text(
        "import flyjobs\n\n"
        "@flyjobs.remote(schedule=flyjobs.Cron('61 * * * *'))\n"
        "def job() -> None: ...\n"
    )
    result = flyjobs("schedule", "deploy", "crons.py", env=fly, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert "Bad minute" in line and "minute (0-59)" in line
    assert _states(fly) == {}


def test_logs_of_an_empty_id_is_an_error_not_every_machines_output(fly: dict[str, str]) -> None:
    assert cli_funcs.print_lines.remote(1, "other") == 1
    for ident in ("", " "):
        result = CliRunner().invoke(cli, ["logs", ident])
        assert result.exit_code == 1
        assert "give a call id" in result.output and "other" not in result.output


def test_logs_follow_waits_for_a_call_that_has_no_machine_yet(fly: dict[str, str]) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "flyjobs", "logs", "fj-later", "--follow"],
        env={**os.environ, **fly},
        cwd=SUPPORT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stderr is not None
        assert follower.stderr.readline() == "waiting for a machine of fj-later…\n"
        _create(fly, {"flyjobs_function": "jobs:f", "flyjobs_call_id": "fj-later"}, PRINT_AND_EXIT)
        out, errors = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, errors
    assert out == "hello from a late machine\n"


def test_logs_follow_prints_lines_while_the_call_runs(fly: dict[str, str], tmp_path: Path) -> None:
    signal_file = tmp_path / "finish"
    call = cli_funcs.print_then_wait.spawn(str(signal_file))
    follower = subprocess.Popen(
        [sys.executable, "-m", "flyjobs", "logs", call.id, "--follow"],
        env={**os.environ, **fly},
        cwd=SUPPORT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "started\n"  # while the call still runs
        assert call.status.value == "running"
        signal_file.touch()
        assert call.result(timeout_s=30) == "done"
        rest, errors = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, errors
    assert rest == "finished\n"


def test_logs_follow_of_one_input_ends_with_it_while_its_machine_goes_on(
    fly: dict[str, str], tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    results = cli_funcs.print_then_wait.map([str(first), str(second)], max_machines=1)
    while not _machine_names():
        time.sleep(0.05)
    (machine,) = _machine_names()
    follower = subprocess.Popen(
        [sys.executable, "-m", "flyjobs", "logs", machine.replace("-m0", "-0"), "--follow"],
        env={**os.environ, **fly},
        cwd=SUPPORT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "started\n"
        first.touch()
        # The machine now runs the second input, which waits: the follower is done anyway.
        rest, errors = follower.communicate(timeout=60)
    finally:
        follower.kill()
        second.touch()
    assert follower.returncode == 0, errors
    assert rest == "finished\n"
    assert list(results) == ["done", "done"]


@pytest.mark.slow
def test_logs_of_each_call_on_a_pool_machine(fly: dict[str, str]) -> None:
    pool = flyjobs_pkg.Pool(max=1, idle_s=60, name="logs-pool")
    try:
        printing = cli_funcs.print_lines.with_options(pool=pool)
        calls = [printing.spawn(2, tag) for tag in ("p", "q")]
        assert [call.result(timeout_s=60) for call in calls] == [2, 2]
        assert _machine_names() == ["logs-pool-m0"]  # both calls ran on the one machine
        for call, tag in zip(calls, ("p", "q"), strict=True):
            result = flyjobs("logs", call.id, env=fly)
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == [f"{tag} {i:05d} " + "x" * 60 for i in range(2)]
    finally:
        pool.shutdown()


def test_a_call_that_prints_marks_cannot_put_lines_into_another_calls_logs(
    fly: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    pool = flyjobs_pkg.Pool(max=1, idle_s=60, name="marks-pool")
    try:
        # On one pool machine (whose metadata cannot say which calls it ran), the worker
        # writes a printed mark as a line of the call that printed it.
        victim = cli_funcs.print_lines.with_options(pool=pool).spawn(1, "mine")
        assert victim.result(timeout_s=60) == 1
        forger = cli_funcs.print_marks.with_options(pool=pool).spawn(victim.id)
        assert forger.result(timeout_s=60) == "printed"
        assert _machine_names() == ["marks-pool-m0"]
    finally:
        pool.shutdown()
    forged = cli_funcs.forged_lines(victim.id)
    assert capsys.readouterr().out.splitlines() == [
        f"[{victim.id}] mine 00000 " + "x" * 60,
        *(f"[{forger.id}] {line}" for line in forged),
    ]
    # A machine of one call, written to past the worker (a subprocess would): its marks may
    # name only its own call.
    alone = cli_funcs.print_marks.spawn(victim.id, raw=True)
    assert alone.result(timeout_s=60) == "printed"
    assert capsys.readouterr().out.splitlines() == [
        f"[{alone.id}] {line}" for line in [*forged, cli_funcs.RAW_END]
    ]
    logs = {
        call.id: CliRunner().invoke(cli, ["logs", call.id], catch_exceptions=False)
        for call in (victim, forger, alone)
    }
    assert logs[victim.id].output.splitlines() == ["mine 00000 " + "x" * 60]
    assert logs[forger.id].output.splitlines() == forged
    assert logs[alone.id].output.splitlines() == [*forged, cli_funcs.RAW_END]


def test_control_sequences_in_output_cannot_rewrite_the_terminal(
    fly: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    call = cli_funcs.print_controls.spawn()
    assert call.result(timeout_s=60) == len(cli_funcs.CONTROL_LINES)
    expected = list(cli_funcs.CONTROL_LINES.values())
    assert capsys.readouterr().out.splitlines() == [f"[{call.id}] {line}" for line in expected]
    # color=True: as on a terminal (click drops colours on other outputs)
    result = CliRunner().invoke(cli, ["logs", call.id], catch_exceptions=False, color=True)
    assert result.output.splitlines() == expected


@pytest.mark.slow  # several seconds: run in the slow suite
def test_logs_of_each_of_two_calls_run_at_once_on_a_pool_machine(fly: dict[str, str]) -> None:
    pool = flyjobs_pkg.Pool(max=1, max_concurrency=2, idle_s=60, name="logs-slots")
    try:
        printing = cli_funcs.print_lines.with_options(pool=pool)
        calls = [printing.spawn(300, tag) for tag in ("p", "q")]
        assert [call.result(timeout_s=60) for call in calls] == [300, 300]
        assert _machine_names() == ["logs-slots-m0"]
        for call, tag in zip(calls, ("p", "q"), strict=True):
            result = flyjobs("logs", call.id, env=fly)
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == [f"{tag} {i:05d} " + "x" * 60 for i in range(300)]
    finally:
        pool.shutdown()


@pytest.fixture
def fly_small_logs(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Like ``fly``, on an emulator that keeps only the last KiB of each machine's output."""
    yield from fly_env(make_emulator(log_max_bytes=1024), monkeypatch)


def _dropped(line: str) -> int:
    """The number of lines a line of the emulator says were dropped (0: not such a line)."""
    prefix = "[flyjobs emulator: "
    if not line.startswith(prefix):
        return 0
    assert "were dropped: it keeps the last 1024 bytes" in line and "--log-max-bytes" in line
    return int(line[len(prefix) :].split()[0])


def test_logs_say_where_the_emulator_dropped_lines(fly_small_logs: dict[str, str]) -> None:
    call = cli_funcs.print_lines.spawn(100)
    assert call.result(timeout_s=60) == 100
    result = flyjobs("logs", call.id, env=fly_small_logs)
    assert result.returncode == 0, result.stderr
    first, *kept = result.stdout.splitlines()
    dropped = _dropped(first)
    assert 0 < dropped < 100  # the 71-byte lines do not all fit in 1 KiB
    assert kept == [f"line {i:05d} " + "x" * 60 for i in range(dropped, 100)]


def test_logs_of_an_input_whose_start_was_dropped(fly_small_logs: dict[str, str]) -> None:
    results = cli_funcs.print_lines.starmap([(2, "a"), (100, "b")], max_machines=1)
    assert list(results) == [2, 100]
    (machine,) = _machine_names()
    batch = machine.rsplit("-", 1)[0]
    # Input 1's start mark went with the dropped lines; its end mark still names it.
    result = flyjobs("logs", f"{batch}-1", env=fly_small_logs)
    assert result.returncode == 0, result.stderr
    first, *kept = result.stdout.splitlines()
    dropped = _dropped(first)
    assert kept == [f"b {i:05d} " + "x" * 60 for i in range(100 - len(kept), 100)]
    assert dropped >= 100 - len(kept) + 2  # its own first lines, input 0's, and marks
    # All of input 0 was dropped: not found, and the error says why it may be.
    gone = flyjobs("logs", f"{batch}-0", env=fly_small_logs)
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
    assert "dropped earlier lines of 1 machine(s)" in gone.stderr


def test_logs_of_an_unknown_id_is_a_clear_error(fly: dict[str, str]) -> None:
    result = flyjobs("logs", "fj-nope", env=fly)
    assert result.returncode == 1
    assert "fj-nope" in result.stderr and "Traceback" not in result.stderr


# -- doctor ----------------------------------------------------------------------------------


def test_doctor_passes_a_good_setup(fly: dict[str, str]) -> None:
    result = flyjobs("doctor", env=fly)
    assert result.returncode == 0, result.stdout
    names = [line.split(":")[0].split(None, 1)[1] for line in result.stdout.splitlines()[1:]]
    assert names == ["token", "app", "secrets", "logs", "image", "results", "rate limits"]
    assert all(line.startswith("PASS") for line in result.stdout.splitlines()[1:])


@pytest.mark.slow
def test_doctor_names_each_failure_with_its_fix(fly: dict[str, str]) -> None:
    # (Machines of an API on this host reach an inbox on 127.0.0.1: results fail for want of
    # the store asked for.)
    env = {k: v for k, v in fly.items() if k != "FLYJOBS_IMAGE"}
    env.update(FLY_APP="nope", FLYJOBS_RESULTS="store")
    result = flyjobs("doctor", "--secret", "DATABASE_URL", env=env, cwd=Path("/"))
    assert result.returncode == 1
    out = result.stdout
    assert "PASS  token" in out
    assert "FAIL  app: no app 'nope'" in out and "fly apps create nope" in out
    assert "FAIL  image" in out and "FLYJOBS_IMAGE" in out
    assert "FAIL  results" in out and "FLYJOBS_STORE" in out
    secrets = flyjobs("doctor", "--secret", "DATABASE_URL", env=fly)
    assert "FAIL  secrets" in secrets.stdout
    # The API is the emulator on this host: set through its secrets API, not `fly secrets`.
    assert f"/v1/apps/{APP}/secrets/DATABASE_URL" in secrets.stdout
    bad_token = flyjobs("doctor", env={**fly, "FLY_API_TOKEN": "nope-nope"})
    assert "FAIL  token" in bad_token.stdout and "FLY_API_TOKEN" in bad_token.stdout


def test_doctor_without_a_token_reports_the_embedded_emulator() -> None:
    result = flyjobs("doctor", env={})
    assert result.returncode == 0
    assert "PASS  back end" in result.stdout and "embedded" in result.stdout


@pytest.mark.slow  # several seconds: run in the slow suite
def test_commands_work_against_flyjobs_dev(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "flyjobs", "dev", "--port", "0", "--app", "my-app"]
    dev = subprocess.Popen(
        argv,
        env={**os.environ, "FLYJOBS_DEV_TOKEN": "dev-token-0123456789"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert dev.stdout is not None
        dev.stdout.readline()
        exports = dev.stdout.readline().split()[1:]  # export A=1 B=2 ...
        env = dict(item.split("=", 1) for item in exports)
        assert env["FLY_APP"] == "my-app" and env["FLY_API_TOKEN"] == '"$FLYJOBS_DEV_TOKEN"'
        env["FLY_API_TOKEN"] = "dev-token-0123456789"
        env.update(FLYJOBS_IMAGE="local", FLYJOBS_INBOX_HOST="127.0.0.1")
        env.update(FLYJOBS_INBOX_BIND="127.0.0.1", FLYJOBS_RESULT_KEY=RESULT_KEY)
        with _api(env) as http:
            secret = {"value": RESULT_KEY}
            assert http.post("/v1/apps/my-app/secrets/FLYJOBS_RESULT_KEY", json=secret).is_success
        ran = flyjobs("run", "cli_funcs.py::square", "5", env=env)
        assert ran.stdout == "25\n", ran.stderr
        listed = json.loads(flyjobs("ls", "--all", "--json", env=env).stdout)
        assert [m["function"] for m in listed] == ["cli_funcs:square"]
        assert flyjobs("doctor", env=env).returncode == 0
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.communicate(timeout=20)


def test_flyjobs_dev_refuses_a_bad_app_name() -> None:
    result = flyjobs("dev", "--port", "0", "--app", "Bad_Name", env={})
    assert result.returncode == 2
    assert "lowercase letters, digits and dashes" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "Invalid value for '--port': 70000: it should be less than or equal"),
        (["--error-rate", "2"], "Invalid value for '--error-rate': 2.0: it should be less than"),
        (["--log-max-bytes", "10"], "'--log-max-bytes': 10: it should be greater than or equal"),
        (["--host", "no-such-host.invalid"], "cannot listen on no-such-host.invalid:0"),
        (["--data-dir", "/proc/no-such-dir"], "cannot use /proc/no-such-dir"),
        (["--token-file", "/proc/no/token"], "cannot use the token file /proc/no/token"),
    ],
)
def test_flyjobs_dev_bad_values_are_one_clear_error(args: list[str], message: str) -> None:
    result = flyjobs("dev", "--port", "0", *args, env={}, timeout=30)
    assert result.returncode in (1, 2), result.stdout
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert " pass " in errors[0] or "it should be" in errors[0]  # the fix is named


def test_a_bad_api_port_is_a_clear_error() -> None:
    env = {"FLY_API_TOKEN": "t", "FLY_API_HOSTNAME": "http://127.0.0.1:99999", "FLY_APP": "a"}
    result = flyjobs("ls", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "bad port (use 1 to 65535)" in result.stderr


# -- escapes in what commands print ----------------------------------------------------------

#: A window title change, a screen clear, a bell and a fake new line.
ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[31m\r\nFAKE"


@pytest.mark.slow
def test_no_command_writes_a_terminal_escape_it_read(fly: dict[str, str], tmp_path: Path) -> None:
    now = time.time()
    _create(
        fly,
        {
            "flyjobs_function": f"jobs:work{ESCAPES}",
            "flyjobs_call_id": f"fj-{ESCAPES}",
            "flyjobs_batch_id": ESCAPES,
            "flyjobs_deadline": str(int(now - 600)),
        },
    )
    (tmp_path / "pyproject.toml").write_text("[tool.flyjobs]\n")
    (tmp_path / ".flyjobs").mkdir()
    with sqlite3.connect(tmp_path / ".flyjobs" / "journal.sqlite3") as db:
        db.execute("CREATE TABLE finished (batch TEXT, key TEXT, value BLOB, at REAL)")
        db.execute("INSERT INTO finished VALUES (?, 'k', x'00', 0)", (f"nightly{ESCAPES}",))
    outputs = [
        flyjobs("ls", env=fly),
        flyjobs("ls", "--all", env=fly),
        flyjobs("gc", "--dry-run", env=fly),
        flyjobs("batch", "ls", env=fly, cwd=tmp_path),
    ]
    for done in outputs:
        assert done.returncode == 0, done.stderr
        assert "jobs:work" in done.stdout or "nightly" in done.stdout
        for char in "\x1b\x07\r":
            assert char not in done.stdout + done.stderr, done.args
        assert "\nFAKE" not in done.stdout  # one row stays one line
        assert "\\x1b]0;pwned\\x07" in done.stdout


def test_logs_of_a_failed_input_show_its_exception_and_traceback(
    fly: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = list(cli_funcs.fetch_rows.map([3, 0], return_exceptions=True, max_machines=1))
    assert outcomes[0] == 3 and isinstance(outcomes[1], ValueError)
    batch = _machine_names()[0].rsplit("-", 1)[0]
    # Live output leaves the exception out: the caller has it.
    assert "Traceback" not in capsys.readouterr().out
    failed = flyjobs("logs", f"{batch}-1", env=fly)
    assert failed.returncode == 0, failed.stderr
    lines = failed.stdout.splitlines()
    assert lines[:3] == [
        "fetching 0 rows",
        "[flyjobs] the call raised ValueError: upstream returned 0 rows",
        "Remote traceback:",
    ]
    assert lines[3] == "Traceback (most recent call last):"
    assert 'raise ValueError("upstream returned 0 rows")' in failed.stdout
    assert lines[-1] == "ValueError: upstream returned 0 rows"
    assert flyjobs("logs", f"{batch}-0", env=fly).stdout.splitlines() == ["fetching 3 rows"]
