"""What a call prints reaches the caller while the call runs, through Fly's logs API."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import cli_funcs
import httpx
import pytest
from _fly_helpers import fly_env

from flyjobs._calls.runtime import get_runtime
from flyjobs._output.live import LiveOutput
from flyjobs.emulator import RunningEmulator
from flyjobs.machines import MachinesClient

LINE = "x" * 60


@pytest.fixture
def fly(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    yield from fly_env(make_emulator(), monkeypatch)


def test_lines_reach_the_caller_while_the_call_runs(
    fly: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    finish = tmp_path / "finish"
    call = cli_funcs.print_then_wait.spawn(str(finish))
    out = ""
    while f"[{call.id}] started" not in out:
        out += capsys.readouterr().out
        assert not call.done()
        time.sleep(0.01)
    finish.touch()
    assert call.result(timeout_s=30) == "done"
    out += capsys.readouterr().out
    assert out.count(f"[{call.id}] started") == 1
    assert out.endswith(f"[{call.id}] finished\n")


def test_3000_printed_lines_all_reach_the_caller_in_order(
    fly: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    call = cli_funcs.print_lines.spawn(3000)
    assert call.result(timeout_s=60) == 3000
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"[{call.id}] line {i:05d} {LINE}" for i in range(3000)]


@pytest.mark.slow  # several seconds: run in the slow suite
def test_without_the_logs_api_the_tail_comes_with_a_marker(
    fly: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = get_runtime()
    # Logs read from a port nothing listens on: the live output fails, the result's tail shows.
    broken = MachinesClient(
        token=fly["FLY_API_TOKEN"], base_url=fly["FLY_API_HOSTNAME"], logs_url="http://127.0.0.1:9"
    )
    runtime.live = LiveOutput(broken, runtime._tasks)
    try:
        call = cli_funcs.print_lines.spawn(3000)
        assert call.result(timeout_s=60) == 3000
    finally:
        runtime.portal.call(broken.aclose)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"[{call.id}] [output cut; all of it: flyjobs logs {call.id}]"
    assert lines[-1] == f"[{call.id}] line 02999 {LINE}"
    assert 500 < len(lines) < 3000


def test_a_caller_that_fell_behind_the_logs_retention_says_lines_were_missed(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(log_max_bytes=1024)
    finish = tmp_path / "finish"
    program = (
        "import os, time\n"
        "print('ready', flush=True)\n"
        f"while not os.path.exists({str(finish)!r}): time.sleep(0.01)\n"
        f"for i in range(200): print(f'line {{i:03d}} {LINE}')\n"
    )
    headers = {"Authorization": f"Bearer {emulator.token}"}
    written: list[str] = []
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=60) as http:
        assert http.post("/v1/apps", json={"app_name": "behind", "org_slug": "personal"})
        config = {"image": "python", "init": {"exec": [sys.executable, "-c", program]}}
        created = http.post("/v1/apps/behind/machines", json={"config": config})
        assert created.status_code == 200, created.text
        machine_id = created.json()["id"]
        last_line = anyio.Event()

        def write(text: str) -> None:
            written.append(text)
            if text == "[fj-behind] ready\n":
                # The caller stalls (a slow terminal, a busy loop) while the machine prints
                # more than the logs keep.
                finish.touch()
                stopped = http.get(
                    f"/v1/apps/behind/machines/{machine_id}/wait",
                    params={"state": "stopped", "timeout": 60},
                )
                assert stopped.status_code == 200, stopped.text
            if text.startswith("[fj-behind] line 199 "):
                last_line.set()

        async def follow() -> None:
            client = MachinesClient(token=emulator.token, base_url=emulator.url)
            async with client, anyio.create_task_group() as tasks:
                live = LiveOutput(client, tasks, write)
                live.watch("behind", machine_id, "fj-behind")
                with anyio.fail_after(60):
                    await last_line.wait()
                live.forget("behind", machine_id)

        anyio.run(follow)
    ready, gap, *shown = written
    assert ready == "[fj-behind] ready\n"
    prefix = "[fj-behind] [flyjobs emulator: "
    assert gap.startswith(prefix) and "earlier lines of this machine were dropped" in gap
    dropped = int(gap[len(prefix) :].split()[0])
    # Every line is either shown or counted as missed.
    assert shown == [f"[fj-behind] line {i:03d} {LINE}\n" for i in range(dropped, 200)]


def test_a_raw_mark_for_another_call_is_a_line_of_the_input_that_wrote_it(
    fly: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Written past the worker, as a subprocess would, by an input of a batch: the marks name a
    # call that is not the batch's, so they are lines of that input (as `flyjobs logs` shows).
    other = "fj-0000000000000000"
    assert list(cli_funcs.print_marks.map([other], [True], output="live")) == ["printed"]
    lines = capsys.readouterr().out.splitlines()
    assert len({line.partition("] ")[0] for line in lines}) == 1, lines
    assert [line.partition("] ")[2] for line in lines] == [
        *cli_funcs.forged_lines(other),
        cli_funcs.RAW_END,
    ]
