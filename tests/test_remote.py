"""@remote end to end: the embedded emulator, real worker processes, the real inbox."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import remote_funcs as funcs
from _remote_helpers import machine_of
from _remote_helpers import machines as _machines
from _waiting import eventually
from remote_funcs import Colour, Model, Point

import flyjobs
from flyjobs._aio import blocking as _blocking
from flyjobs._calls.plan import MAX_INLINE_PAYLOAD_BYTES, _portable
from flyjobs._calls.runtime import Runtime
from flyjobs._wire.call_envelope import decode_call
from flyjobs._wire.machine import PAYLOAD_GUEST_PATH

pytestmark = pytest.mark.usefixtures("no_machine_left")


VALUES = [
    None,
    True,
    42,
    2**80,
    -1.5,
    "héllo",
    b"\x00bytes",
    [1, "two", [3]],
    (1, (2, 3)),
    {1, 2, 3},
    frozenset({"a"}),
    {"nested": {"k": [1, 2]}, 3: "int key", (1, 2): "tuple key"},
    dt.datetime(2026, 11, 27, 12, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 27, 12, 30),
    dt.date(2026, 1, 2),
    dt.timedelta(seconds=90),
    decimal.Decimal("3.14159265358979323846"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Point(1, 2.5),
    Colour.red,
    Model(name="m", tags=["a", "b"]),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_round_trip_through_a_machine(runtime: Runtime, value: Any) -> None:
    back = funcs.echo.remote(value)
    assert back == value
    assert type(back) is type(value)


def test_args_kwargs_and_async_function(runtime: Runtime) -> None:
    assert funcs.add.remote(2, b=3, scale=10) == 50
    # The awaited value (and typed so: tests/test_typing.py).
    assert funcs.async_double.remote(21) == 42


@pytest.mark.anyio
async def test_async_face(runtime: Runtime) -> None:
    results = await asyncio.gather(*(funcs.add.remote.aio(i, 1) for i in range(4)))
    assert results == [1, 2, 3, 4]


def test_spawn_handle_reports_status_machine_and_timings(runtime: Runtime) -> None:
    call = funcs.add.spawn(1, 2)
    assert call.result(timeout_s=30) == 3
    assert call.status is flyjobs.CallStatus.succeeded
    assert call.machine_id is not None
    machine = machine_of(runtime, call.machine_id)
    assert machine.name == call.id
    assert machine.config is not None and machine.config.metadata is not None
    assert machine.config.metadata["flyjobs_call_id"] == call.id
    assert machine.config.metadata["flyjobs_function"] == "remote_funcs:add"
    timings = call.timings
    assert timings.created_at is not None and timings.result_at is not None
    assert timings.total_s is not None and timings.total_s > 0
    assert call.id in repr(call)


def test_remote_output_is_echoed_with_call_id(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    call = funcs.chatty.spawn(3)
    assert call.result(timeout_s=30) == 3
    out = capsys.readouterr().out
    assert f"[{call.id}] line 0" in out
    assert f"[{call.id}] line 2" in out


def test_exception_comes_back_as_its_type_with_remote_traceback(runtime: Runtime) -> None:
    with pytest.raises(funcs.LocalOnlyError, match="boom") as exc:
        funcs.fail.remote("boom")
    text = getattr(exc.value, "remote_traceback", "")
    assert "raise LocalOnlyError(message) from exc" in text
    assert "KeyError" in text  # the cause chain travels too


def test_unimportable_exception_type_becomes_remote_error(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.RemoteError) as exc:
        funcs.fail_unimportable.remote()
    assert exc.value.type_name.endswith("Ghost")
    assert "boo" in str(exc.value)
    assert "raise cls" in exc.value.remote_traceback


def test_non_serializable_argument_fails_before_any_machine(runtime: Runtime) -> None:
    before = len(_machines(runtime))
    with pytest.raises(flyjobs.SerializationError, match="argument 'value'") as exc:
        funcs.echo.remote({"ok": [1, object()]})
    assert isinstance(exc.value, TypeError)
    assert len(_machines(runtime)) == before


def test_unreferenceable_functions_are_refused_with_a_fix(runtime: Runtime) -> None:
    def inner(x: int) -> int:
        return x

    with pytest.raises(flyjobs.SerializationError, match="module top level"):
        flyjobs.remote(inner).remote(1)
    with pytest.raises(flyjobs.SerializationError, match="lambda"):
        flyjobs.remote(lambda x: x).remote(1)


def test_out_of_memory_suggests_more_memory(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.OutOfMemoryError, match="memory_mb") as exc:
        funcs.hog.remote(600)
    assert exc.value.machine_id is not None


def test_crash_without_result_reports_exit_code_and_output(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.MachineCrashedError) as exc:
        funcs.crash.remote(3)
    assert exc.value.exit_code == 3
    assert "about to crash" in exc.value.output_tail
    assert not isinstance(exc.value, flyjobs.OutOfMemoryError)


def test_timeout_destroys_the_machine(runtime: Runtime) -> None:
    call = funcs.sleepy.spawn(30)
    with pytest.raises(flyjobs.CallTimeoutError, match="timeout_s=2"):
        call.result()
    assert call.machine_id is not None
    machine = machine_of(runtime, call.machine_id)
    assert machine.state in ("destroying", "destroyed")


def test_cancel_destroys_the_machine(runtime: Runtime) -> None:
    call = funcs.slow.spawn(30)
    eventually(lambda: call.status is flyjobs.CallStatus.running, "the call running")
    assert call.cancel() is True
    assert call.status is flyjobs.CallStatus.cancelled
    with pytest.raises(flyjobs.CallCancelledError):
        call.result()
    machine = machine_of(runtime, call.machine_id)
    assert machine.state in ("destroying", "destroyed")


def test_forged_and_replayed_results_are_refused(runtime: Runtime) -> None:
    call = funcs.slow.spawn(1.0)
    eventually(lambda: call.machine_id, "the call has a machine")
    machine = machine_of(runtime, call.machine_id)
    assert machine.config is not None
    payload = next(f for f in machine.config.files or [] if f.guest_path == PAYLOAD_GUEST_PATH)
    url = decode_call(base64.b64decode(payload.raw_value or "")).result_url
    forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert httpx.put(forged, content=b"\x80").status_code == 403
    assert call.result(timeout_s=30) == 1.0  # the real result still lands
    assert httpx.put(url, content=b"\x80").status_code in (404, 409)


def test_local_runs_here(runtime: Runtime) -> None:
    before = len(_machines(runtime))
    assert funcs.add.local(1, 2) == 3
    assert funcs.add(1, 2) == 3
    assert len(_machines(runtime)) == before


@pytest.mark.anyio
async def test_sync_face_works_inside_a_running_event_loop(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A running loop in this thread, and a plain blocking call: it works, and (outside a
    # notebook) warns that the loop's other tasks wait meanwhile.
    monkeypatch.setattr(_blocking, "_warned", False)
    with pytest.warns(RuntimeWarning, match=r"fn\.remote\.aio"):
        assert funcs.add.remote(20, 22) == 42
    call = funcs.add.spawn(1, 1)
    assert await call.result_async() == 2


def test_pickle_opt_in_carries_arbitrary_objects(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.SerializationError, match="pickle=True"):
        funcs.echo.remote(funcs.Opaque(3))
    assert funcs.echo_pickled.remote(funcs.Opaque(3)) == funcs.Opaque(3)


def test_env_option_reaches_the_machine(runtime: Runtime) -> None:
    assert funcs.greeting.remote() == "hi from env"


def test_retries_run_a_crashed_call_again_on_a_new_machine(
    runtime: Runtime, tmp_path: Path
) -> None:
    call = funcs.crash_once.spawn(str(tmp_path / "marker"))
    assert call.result(timeout_s=60) == "second time lucky"
    names = {m.name for m in _machines(runtime)}
    assert {call.id, f"{call.id}-r1"} <= names


def test_oversized_payload_is_refused_before_any_machine(runtime: Runtime) -> None:
    before = len(_machines(runtime))
    with pytest.raises(flyjobs.SerializationError, match="MiB"):
        funcs.echo.remote(b"x" * (MAX_INLINE_PAYLOAD_BYTES + 1))
    assert len(_machines(runtime)) == before


def test_code_missing_on_the_machine_is_named_with_the_fix(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module importable here but absent where the machine runs, as when the image lacks it
    # (code="image": nothing of the caller's ships).
    (tmp_path / "vanishing_jobs.py").write_text(
        "import flyjobs\n\n@flyjobs.remote(timeout_s=30, code='image')\ndef job():\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing_jobs  # type: ignore[import-not-found]

    (tmp_path / "vanishing_jobs.py").unlink()
    with pytest.raises(flyjobs.RemoteImportError, match="vanishing_jobs:job") as exc:
        vanishing_jobs.job.remote()
    assert "Dockerfile" in str(exc.value)
    assert "ModuleNotFoundError" in exc.value.type_name


def test_import_roots_travel_relative_to_the_project_never_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    inside, outside = str(tmp_path / "examples"), str(tmp_path.parent / "elsewhere")
    # A machine never gets a path into the caller's folders (its code ships in a bundle).
    assert _portable([inside, str(tmp_path), outside]) == ["examples"]


@pytest.mark.anyio
async def test_cancelling_an_awaited_call_destroys_its_machine(runtime: Runtime) -> None:
    before = {m.id for m in _machines(runtime)}
    with anyio.move_on_after(1.0) as scope:
        await funcs.slow.remote.aio(30)
    assert scope.cancelled_caught

    def destroyed() -> list[str | None] | None:
        new = [m.state for m in _machines(runtime) if m.id not in before]
        return new if new and all(state == "destroyed" for state in new) else None

    # In a thread: the test's event loop stays free while it waits.
    new = await anyio.to_thread.run_sync(eventually, destroyed, "the call's machine destroyed")
    assert new == ["destroyed"]
