"""Exits and mistakes, as a user makes them: each comes back as what it is, with a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import misuse_funcs as funcs
import pytest
from _remote_helpers import machines

import flyjobs
from flyjobs._calls.runtime import get_runtime, shutdown_runtime

uses_runtime = pytest.mark.usefixtures("runtime", "no_machine_left")


@uses_runtime
def test_arguments_the_function_does_not_take_are_refused_before_any_machine() -> None:
    runtime = get_runtime()
    with pytest.raises(flyjobs.SerializationError, match=r"add\(a, b\): missing .*'b'") as exc:
        funcs.add.remote(1)  # type: ignore[call-arg]
    assert isinstance(exc.value, TypeError)  # as calling it here would be
    assert "no machine was created" in str(exc.value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        funcs.add.spawn(1, 2, c=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="too many positional arguments"):
        funcs.add.with_options(retries=1).remote(1, 2, 3)  # type: ignore[call-arg]
    assert machines(runtime) == []
    assert funcs.add.remote(b=2, a=1) == 3


@uses_runtime
def test_keyboard_interrupt_in_the_function_is_its_error() -> None:
    with pytest.raises(flyjobs.RemoteError) as exc:
        funcs.interrupt.remote()
    assert exc.value.type_name == "KeyboardInterrupt"
    assert "stopped by the function" in str(exc.value)


@uses_runtime
def test_a_base_exception_of_the_users_is_its_error() -> None:
    with pytest.raises(flyjobs.RemoteError) as exc:
        funcs.halt.remote()
    assert exc.value.type_name == "misuse_funcs.Halt"
    assert "halted" in str(exc.value)


@uses_runtime
def test_an_exit_without_a_result_is_worded_as_such() -> None:
    with pytest.raises(flyjobs.MachineCrashedError) as exc:
        funcs.exit_quietly.remote()
    message = str(exc.value)
    assert exc.value.exit_code == 0
    assert "without a result" in message and "os._exit" in message
    assert "crashed" not in message


@uses_runtime
def test_an_exception_with_a_two_argument_init_comes_back_as_itself() -> None:
    with pytest.raises(funcs.TwoPartError) as exc:
        funcs.two_part_error.remote()
    assert (exc.value.code, exc.value.detail, str(exc.value)) == (
        7,
        "out of range",
        "7: out of range",
    )


@uses_runtime
def test_a_decorated_method_called_on_an_instance_is_a_clear_error() -> None:
    counter = funcs.Counter(10)
    assert counter.plus(5) == 15  # a plain call still runs here
    for face in ("remote", "spawn", "map"):
        with pytest.raises(flyjobs.SerializationError, match="is a method.*module-level"):
            getattr(counter.plus, face)


@uses_runtime
def test_a_remote_call_inside_a_machine_never_starts_an_emulator_there() -> None:
    # No FLY_API_TOKEN among the app's secrets: the nested call says so instead of running a
    # private emulator inside the machine.
    with pytest.raises(flyjobs.ConfigError) as exc:
        funcs.nested.remote(1)
    assert "FLY_API_TOKEN" in str(exc.value) and "app secret" in str(exc.value)


UNGUARDED = """
import flyjobs

@flyjobs.remote(timeout_s=30)
def double(x):
    return 2 * x

print("result", double.remote(21))
"""


def test_a_script_without_a_main_guard_does_not_run_itself_in_every_machine(
    tmp_path: Path,
) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0
    assert "RemoteImportError" in run.stderr
    assert 'if __name__ == "__main__":' in run.stderr


@pytest.mark.parametrize(
    ("env", "missing", "present"),
    [
        (
            # Not on this host: with an API on a loopback address (`flyjobs dev`) the app's
            # result key is read through it, and no FLYJOBS_RESULT_KEY is missing.
            {"FLY_APP": "a", "FLYJOBS_IMAGE": "i", "FLY_API_HOSTNAME": "http://10.0.0.9:9"},
            ["FLY_API_TOKEN", "FLYJOBS_RESULT_KEY"],
            ["the app:", "the image:"],
        ),
        ({"FLY_API_TOKEN": "garbage"}, ["the app:", "the image:", "FLYJOBS_RESULT_KEY"], []),
    ],
)
def test_partial_fly_settings_list_everything_missing_at_once(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    missing: list[str],
    present: list[str],
) -> None:
    for name in list(os.environ):
        if name.startswith(("FLY_", "FLYJOBS_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no pyproject.toml with an app or image above it
    shutdown_runtime()
    try:
        with pytest.raises(flyjobs.ConfigError) as exc:
            funcs.add.remote(1, 2)
    finally:
        shutdown_runtime()
    for name in missing:
        assert name in str(exc.value)
    for name in present:
        assert name not in str(exc.value)


def test_spawn_with_detach_points_to_spawn_detached() -> None:
    # The spelling `fn.spawn(..., detach=True)` would reach the function as its own
    # argument; a function that takes none is told where detached calls are, before any machine.
    with pytest.raises(flyjobs.ConfigError, match="spawn_detached"):
        funcs.interrupt.spawn(detach=True)  # type: ignore[call-arg]
