"""A remote exception's local traceback: the caller's own frames, then the ``Remote traceback:``
note, without the frames of the machinery (runtime loop, anyio, futures) that brought it; and
the remote traceback starts at the user's function."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import remote_funcs as funcs

import flyjobs
from flyjobs._calls.runtime import Runtime

pytestmark = pytest.mark.usefixtures("no_machine_left")

FLYJOBS = Path(flyjobs.__file__).parent


def _raise_remotely_sync(face: str) -> Callable[[], object]:
    return {
        "remote": lambda: funcs.fail.remote("boom"),
        "spawn": lambda: funcs.fail.spawn("boom").result(),
        "map": lambda: list(funcs.fail.map(["boom"])),
    }[face]


async def _raise_remotely_async(face: str) -> None:
    if face == "remote.aio":
        await funcs.fail.remote.aio("boom")
    elif face == "result_async":
        await funcs.fail.spawn("boom").result_async()
    else:
        [v async for v in funcs.fail.map.aio(["boom"])]


def _flyjobs_frames(error: BaseException) -> list[str]:
    frames = traceback.extract_tb(error.__traceback__)
    return [f"{f.filename}:{f.name}" for f in frames if Path(f.filename).is_relative_to(FLYJOBS)]


@pytest.mark.parametrize("face", ["remote", "spawn", "map"])
def test_the_local_traceback_is_the_caller_s_frames(runtime: Runtime, face: str) -> None:
    with pytest.raises(funcs.LocalOnlyError) as exc:
        _raise_remotely_sync(face)()
    # The face that raised it, at most: no runtime, anyio or concurrent.futures frame.
    assert len(_flyjobs_frames(exc.value)) <= 1, _flyjobs_frames(exc.value)
    shown = "".join(traceback.format_exception(exc.value))
    assert "anyio" not in shown and "concurrent/futures" not in shown, shown
    assert "Remote traceback:" in shown


@pytest.mark.parametrize("face", ["remote.aio", "result_async", "map.aio"])
def test_the_async_faces_trim_the_same(runtime: Runtime, face: str) -> None:
    with pytest.raises(funcs.LocalOnlyError) as exc:
        anyio.run(_raise_remotely_async, face)
    shown = "".join(traceback.format_exception(exc.value))
    assert "_calls/runtime.py" not in shown and "_calls/dispatch.py" not in shown, shown
    assert len(_flyjobs_frames(exc.value)) <= 1, _flyjobs_frames(exc.value)


def test_the_remote_traceback_starts_in_the_user_s_function(runtime: Runtime) -> None:
    with pytest.raises(funcs.LocalOnlyError) as exc:
        funcs.fail.remote("boom")
    remote: str = exc.value.remote_traceback  # type: ignore[attr-defined]
    first = remote.split("Traceback (most recent call last):\n")[-1].splitlines()[0]
    assert "remote_funcs.py" in first, remote


def test_an_error_of_flyjobs_itself_keeps_its_frames(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.SerializationError) as exc:
        funcs.echo.remote(object())  # cannot be encoded: raised where it was found
    assert any("call_envelope.py" in frame for frame in _flyjobs_frames(exc.value))
