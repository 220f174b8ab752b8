"""A blocking face (fn.remote(), call.result(), iterating fn.map) used inside a running event
loop warns once, naming its async face; outside a loop, or in a worker thread, it is silent
(pytest turns any warning into an error here)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import anyio
import anyio.to_thread
import pytest
import remote_funcs as funcs

from flyjobs._aio import blocking as _blocking
from flyjobs._calls.runtime import Runtime

pytestmark = pytest.mark.usefixtures("no_machine_left")


@pytest.fixture(autouse=True)
def not_warned_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_blocking, "_warned", False)


def test_a_blocking_remote_in_an_async_handler_warns_once(runtime: Runtime) -> None:
    async def handler() -> list[int]:
        return [funcs.echo.remote(1), funcs.echo.remote(2), funcs.echo.spawn(3).result()]

    with pytest.warns(RuntimeWarning, match=r"fn\.remote\(\) blocks") as record:
        assert anyio.run(handler) == [1, 2, 3]
    assert len(record) == 1, [str(w.message) for w in record]
    assert "await fn.remote.aio(...)" in str(record[0].message)
    assert record[0].filename == __file__  # the user's line, not flyjobs'


@pytest.mark.parametrize(
    ("blocking", "named"),
    [
        (lambda: funcs.echo.spawn(1).result(), "await call.result_async()"),
        (lambda: list(funcs.echo.map([1, 2])), "fn.map.aio(...)"),
        (lambda: list(funcs.echo.map([1]).outcomes()), "fn.map.aio(...)"),
    ],
)
def test_each_blocking_face_names_its_async_face(
    runtime: Runtime, blocking: Callable[[], object], named: str
) -> None:
    async def handler() -> None:
        blocking()

    with pytest.warns(RuntimeWarning, match="blocks this thread's running event loop") as record:
        anyio.run(handler)
    assert named in str(record[0].message)


def test_blocking_faces_are_silent_outside_a_loop_and_in_worker_threads(
    runtime: Runtime,
) -> None:
    assert funcs.echo.remote(1) == 1
    assert list(funcs.echo.map([1, 2])) == [1, 2]

    async def handler() -> object:
        await funcs.echo.remote.aio(3)
        return await anyio.to_thread.run_sync(funcs.echo.remote, 4)

    assert anyio.run(handler) == 4


class ZMQInteractiveShell:
    """Stands in for ipykernel's shell: its cells run inside the kernel's event loop."""


def test_a_notebook_cell_blocks_without_a_warning(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = ZMQInteractiveShell()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))

    async def cell() -> object:
        return funcs.echo.remote(5)

    assert anyio.run(cell) == 5
