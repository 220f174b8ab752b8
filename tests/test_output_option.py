"""``output="live"|"errors"|"none"``: what the lines calls print show here.

Every print of every input of a map reached the caller's stdout (1,200 lines for 600 inputs)
with no way to turn it off. Now ``.remote`` shows them live and ``map`` only what failed inputs
printed (plus one line saying how to see the rest), unless told otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import output_funcs as funcs
import pytest
from _fly_helpers import fly_env
from click.testing import CliRunner

import flyjobs
from flyjobs._calls.runtime import Runtime, get_runtime, shutdown_runtime
from flyjobs._settings import Settings
from flyjobs.cli import cli
from flyjobs.emulator import RunningEmulator

CHOICES = "'live'.*'errors'.*'none'"


def _said(out: str) -> list[str]:
    """The inputs whose line was shown, from captured stdout."""
    return sorted(line.split()[2] for line in out.splitlines() if "says hi" in line)


def test_map_shows_only_what_failed_inputs_printed_and_says_how_to_see_the_rest(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    values = list(funcs.say.map(range(4), return_exceptions=True))
    assert [v if isinstance(v, int) else "error" for v in values] == [0, "error", 2, 3]
    out, err = capsys.readouterr()
    assert _said(out) == ["1"]
    hints = [line for line in err.splitlines() if 'output="errors"' in line]
    assert len(hints) == 1 and 'output="live"' in hints[0]  # once per batch


def test_output_live_on_a_map_shows_every_line(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert list(funcs.say.map([0, 2, 3], output="live")) == [0, 2, 3]
    out, err = capsys.readouterr()
    assert _said(out) == ["0", "2", "3"]
    assert err == ""


def test_output_none_shows_nothing_of_a_map_or_a_call(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet = funcs.say.with_options(output="none")
    assert len(list(quiet.map(range(3), return_exceptions=True))) == 3
    with pytest.raises(ValueError, match="one fails"):
        quiet.remote(1)
    assert capsys.readouterr() == ("", "")


def test_remote_shows_live_output_unless_told_otherwise(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert funcs.say.remote(2) == 2
    assert _said(capsys.readouterr().out) == ["2"]
    errors_only = funcs.say.with_options(output="errors")
    assert errors_only.remote(3) == 3
    with pytest.raises(ValueError, match="one fails"):
        errors_only.remote(1)
    assert _said(capsys.readouterr().out) == ["1"]
    # A map's own setting wins over the function's.
    assert list(errors_only.map([0], output="none")) == [0]
    assert capsys.readouterr() == ("", "")


def test_a_bad_output_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(flyjobs.ConfigError, match=f"output='loud': choose {CHOICES}"):
        flyjobs.remote(output="loud")  # type: ignore[call-overload]
    with pytest.raises(flyjobs.ConfigError, match=f"output=True: choose {CHOICES}"):
        funcs.say.with_options(output=True)  # type: ignore[arg-type]
    with pytest.raises(flyjobs.ConfigError, match=f"output='all': choose {CHOICES}"):
        funcs.say.map([1], output="all")  # type: ignore[call-overload]


def test_flyjobs_output_and_pyproject_set_the_process_default(tmp_path: Path) -> None:
    assert Settings.load(environ={}, cwd=tmp_path).output is None
    (tmp_path / "pyproject.toml").write_text('[tool.flyjobs]\noutput = "none"\n')
    assert Settings.load(environ={}, cwd=tmp_path).output == "none"
    assert Settings.load(environ={"FLYJOBS_OUTPUT": "Live"}, cwd=tmp_path).output == "live"
    with pytest.raises(flyjobs.ConfigError, match=f"FLYJOBS_OUTPUT.*'loud': choose {CHOICES}"):
        Settings.load(environ={"FLYJOBS_OUTPUT": "loud"}, cwd=tmp_path)


@pytest.fixture
def runtime_with_output_none(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    for name in ("FLY_API_TOKEN", "FLY_API_HOSTNAME", "FLY_APP", "FLYJOBS_IMAGE",
                 "FLYJOBS_RESULT_KEY", "FLY_MACHINE_ID"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLYJOBS_OUTPUT", "none")
    shutdown_runtime()
    yield get_runtime()
    shutdown_runtime()


def test_flyjobs_output_applies_where_the_function_does_not_say(
    runtime_with_output_none: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert funcs.say.remote(2) == 2
    assert len(list(funcs.say.map(range(3), return_exceptions=True))) == 3
    assert capsys.readouterr() == ("", "")
    assert funcs.say.with_options(output="live").remote(3) == 3
    assert _said(capsys.readouterr().out) == ["3"]


@pytest.fixture
def fly(
    make_emulator: Callable[..., RunningEmulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    yield from fly_env(make_emulator(), monkeypatch)


def test_on_fly_the_hint_names_flyjobs_logs_which_shows_every_line(
    fly: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert list(funcs.say.map([0, 2])) == [0, 2]
    out, err = capsys.readouterr()
    assert out == ""
    batch = err.split("flyjobs logs ")[1].split()[0]
    logs = CliRunner().invoke(cli, ["logs", batch], catch_exceptions=False)
    assert _said(logs.output) == ["0", "2"]
