"""No exception group escapes a public call (every error derives from FlyjobsError), and a
store variable left in the shell does not break the zero-config embedded emulator."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import anyio
import click
import pytest
import remote_funcs

import flyjobs
from flyjobs._aio.sole_error import sole_error
from flyjobs._calls.runtime import Runtime, shutdown_runtime
from flyjobs._commands.common import shows_errors

_FLY_ONLY = ("FLY_API_TOKEN", "FLY_API_HOSTNAME", "FLY_APP", "FLYJOBS_IMAGE")


@pytest.fixture
def local_shell(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No Fly setting at all (the embedded emulator); the runtime starts afresh."""
    for name in (*_FLY_ONLY, "FLYJOBS_RESULT_KEY", "FLY_MACHINE_ID", "FLYJOBS_STORE"):
        monkeypatch.delenv(name, raising=False)
    shutdown_runtime()
    yield monkeypatch
    shutdown_runtime()


@pytest.fixture
def store_without_s3_client(local_shell: pytest.MonkeyPatch) -> None:
    """A store is configured, with credentials, and obstore cannot be imported."""
    local_shell.setenv("FLYJOBS_STORE", "s3://results/flyjobs")
    local_shell.setenv("AWS_ACCESS_KEY_ID", "tid_x")
    local_shell.setenv("AWS_SECRET_ACCESS_KEY", "tsec_x")
    local_shell.setitem(sys.modules, "obstore", None)
    local_shell.setitem(sys.modules, "obstore.store", None)


def _is_the_setup_error(exc: BaseException) -> None:
    assert type(exc) is flyjobs.ConfigError, repr(exc)
    assert "pip install 'flyjobs[store]'" in str(exc)
    assert exc.__context__ is None or not isinstance(exc.__context__, BaseExceptionGroup)


@pytest.mark.usefixtures("store_without_s3_client")
def test_a_setup_error_is_itself_from_every_face() -> None:
    with pytest.raises(flyjobs.ConfigError) as exc:
        remote_funcs.echo.remote(1)
    _is_the_setup_error(exc.value)
    with pytest.raises(flyjobs.ConfigError) as exc:
        list(remote_funcs.echo.map([1, 2]))
    _is_the_setup_error(exc.value)

    async def aio() -> None:
        await remote_funcs.echo.remote.aio(1)

    with pytest.raises(flyjobs.ConfigError) as exc:
        anyio.run(aio)
    _is_the_setup_error(exc.value)


def test_a_stray_bucket_name_keeps_the_embedded_emulator(
    local_shell: pytest.MonkeyPatch,
) -> None:
    # What `fly storage create` exports, left in a shell that has no Fly settings: no
    # credentials here, and the call runs locally all the same.
    local_shell.setenv("BUCKET_NAME", "my-app-results")
    local_shell.delenv("AWS_ACCESS_KEY_ID", raising=False)
    local_shell.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    assert remote_funcs.echo.remote(7) == 7


def test_work_on_the_runtime_raises_what_its_task_group_caught(runtime: Runtime) -> None:
    async def grouped() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_raise_config_error)

    with pytest.raises(flyjobs.ConfigError, match="bad setting"):
        runtime.call(grouped)
    with pytest.raises(flyjobs.ConfigError, match="bad setting"):
        runtime.submit(grouped).result()


async def _raise_config_error() -> None:
    raise flyjobs.ConfigError("bad setting")


def test_a_command_shows_a_grouped_error_as_one_line() -> None:
    @shows_errors
    def command() -> None:
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [flyjobs.ConfigError("bad")])])

    with pytest.raises(click.ClickException) as exc:
        command()
    assert exc.value.message == "bad"


def test_the_sole_error_of_nested_groups() -> None:
    error = flyjobs.ConfigError("first")
    assert sole_error(ExceptionGroup("a", [ExceptionGroup("b", [error])])) is error
    assert sole_error(error) is error
    # Several: the first, naming the others; an interrupt wins over errors.
    several = sole_error(ExceptionGroup("a", [error, ValueError("second")]))
    assert several is error
    assert error.__notes__ == ["At the same time: ValueError: second"]
    interrupt = KeyboardInterrupt()
    assert sole_error(BaseExceptionGroup("a", [ValueError("x"), interrupt])) is interrupt
