"""What a call prints reaches the caller while the call runs, through Fly's logs API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cli_funcs
import pytest
from _fly_helpers import fly_env

from flyjobs._live import LiveOutput
from flyjobs._runtime import get_runtime
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
    while f"[{call.call_id}] started" not in out:
        out += capsys.readouterr().out
        assert not call.done()
        time.sleep(0.01)
    finish.touch()
    assert call.result(timeout_s=30) == "done"
    out += capsys.readouterr().out
    assert out.count(f"[{call.call_id}] started") == 1
    assert out.endswith(f"[{call.call_id}] finished\n")


def test_3000_printed_lines_all_reach_the_caller_in_order(
    fly: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    call = cli_funcs.print_lines.spawn(3000)
    assert call.result(timeout_s=60) == 3000
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"[{call.call_id}] line {i:05d} {LINE}" for i in range(3000)]


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
    assert lines[0] == f"[{call.call_id}] [output cut; all of it: flyjobs logs {call.call_id}]"
    assert lines[-1] == f"[{call.call_id}] line 02999 {LINE}"
    assert 500 < len(lines) < 3000
