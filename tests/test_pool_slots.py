"""Warm pools with ``max_concurrency`` (calls one machine runs at once) and ``min`` machines
started with the pool, over the embedded emulator."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pool_funcs as funcs
import pytest
from _pool_helpers import live, pool_machines
from _waiting import eventually

import flyjobs
from flyjobs._calls.runtime import Runtime
from flyjobs._pools.runner import PoolRunner

pytestmark = pytest.mark.usefixtures("no_machine_left")


@pytest.mark.parametrize(("max_concurrency", "machines"), [(2, 1), (1, 2)])
def test_calls_that_must_run_together_share_a_machine_with_a_slot_each(
    runtime: Runtime, tmp_path: Path, max_concurrency: int, machines: int
) -> None:
    pool = flyjobs.Pool(max=2, max_concurrency=max_concurrency, idle_s=60)
    fn = funcs.meet.with_options(pool=pool)
    try:
        # Each call waits until both run: on one machine only if it runs both at once.
        calls = [fn.spawn(str(tmp_path), x, 2) for x in range(2)]
        results = [call.result(timeout_s=60) for call in calls]
    finally:
        pool.shutdown()
    assert [x for x, _ in results] == [0, 1]
    assert len({pid for _, pid in results}) == machines
    assert len(pool_machines(runtime, pool)) == machines


def test_the_pool_grows_only_once_every_slot_is_busy(runtime: Runtime, tmp_path: Path) -> None:
    pool = flyjobs.Pool(max=3, max_concurrency=2, idle_s=60)
    fn = funcs.meet.with_options(pool=pool)
    try:
        # Two calls at once: the machine started for the first has a slot for the second.
        first, second = (fn.spawn(str(tmp_path), x, 3) for x in range(2))
        eventually(lambda: len(os.listdir(tmp_path)) == 2, "both calls run")
        assert len(pool_machines(runtime, pool)) == 1, "grew while a slot was free"
        third = fn.spawn(str(tmp_path), 2, 3)  # both slots busy: a second machine
        pids = [call.result(timeout_s=60)[1] for call in (first, second, third)]
    finally:
        pool.shutdown()
    assert pids[0] == pids[1] != pids[2]
    assert len(pool_machines(runtime, pool)) == 2


def test_a_machine_killed_with_two_calls_in_flight_retries_both(
    runtime: Runtime, tmp_path: Path
) -> None:
    pool = flyjobs.Pool(max=1, max_concurrency=2, idle_s=60)
    pid_file = tmp_path / "worker.pid"
    fn = funcs.hang_on_the_first_machine.with_options(pool=pool, retries=1)
    try:
        calls = [fn.spawn(str(pid_file), x) for x in range(2)]
        eventually(
            lambda: all(Path(f"{pid_file}.{x}").exists() for x in range(2)),
            "both calls run on the first machine",
        )
        killed = int(pid_file.read_text())
        os.kill(killed, signal.SIGKILL)
        results = [call.result(timeout_s=60) for call in calls]
    finally:
        pool.shutdown()
    (replacement,) = {pid for _, pid in results}
    assert [x for x, _ in results] == [0, 1] and replacement != killed
    assert len(pool_machines(runtime, pool)) == 2


@pytest.mark.slow  # several seconds: run in the slow suite
def test_a_call_past_its_timeout_fails_alone_and_its_machine_takes_no_more(
    runtime: Runtime, tmp_path: Path
) -> None:
    pool = flyjobs.Pool(max=1, max_concurrency=2, idle_s=60)
    pid_file = tmp_path / "worker.pid"
    nap = funcs.nap.with_options(pool=pool)
    try:
        # A machine up first, so that the stuck call's clock starts on a running machine.
        machine_pid = nap.remote(0.0)
        hang = funcs.hang_the_first_time.with_options(pool=pool, timeout_s=2)
        stuck = hang.spawn(str(pid_file))
        eventually(lambda: pid_file.exists() and pid_file.read_text() != "", "the call started")
        # Outlasts the stuck call's timeout on the same machine, and is not cut short by it.
        longer = nap.spawn(4.0)
        with pytest.raises(flyjobs.CallTimeoutError, match="takes no more calls"):
            stuck.result(timeout_s=60)
        assert longer.result(timeout_s=60) == machine_pid == int(pid_file.read_text())
        (first,) = pool_machines(runtime, pool)
        # The next call gets a machine of its own; the first ends once its calls have.
        assert nap.remote(0.0) != machine_pid
        eventually(lambda: first.id not in [m.id for m in live(runtime, pool)], "it ended")
    finally:
        pool.shutdown()
    assert len(pool_machines(runtime, pool)) == 2


def test_start_brings_up_min_machines_before_any_call(runtime: Runtime) -> None:
    pool = flyjobs.Pool(min=2, max=3, idle_s=60)
    fn = funcs.pid_of.with_options(pool=pool)
    with pool:
        started = {m.id for m in live(runtime, pool)}
        assert len(started) == 2
        fn.remote(1)
        assert {m.id for m in pool_machines(runtime, pool)} == started  # none created
    assert live(runtime, pool) == []  # leaving the block shut the pool down


def test_a_machine_killed_at_min_is_replaced_with_no_call(runtime: Runtime) -> None:
    pool = flyjobs.Pool(min=1, max=2, idle_s=60)
    fn = funcs.pid_of.with_options(pool=pool)
    with pool:
        (first,) = live(runtime, pool)
        _, pid = fn.remote(1)
        os.kill(pid, signal.SIGKILL)
        eventually(
            lambda: [m.id for m in live(runtime, pool)] not in ([first.id], []),
            "a new machine replaced the killed one",
        )
        (replacement,) = live(runtime, pool)
        assert fn.remote(2)[1] != pid
        assert [m.id for m in live(runtime, pool)] == [replacement.id]
    assert live(runtime, pool) == []


def test_a_machine_that_never_ran_is_not_replaced(runtime: Runtime) -> None:
    # An interpreter that cannot start: each replacement would fail the same way.
    pool = flyjobs.Pool(min=1, max=2, idle_s=60)
    funcs.pid_of.with_options(pool=pool, env={"PYTHONHOME": "/nonexistent"})
    with pytest.raises(flyjobs.FlyjobsError):
        pool.start()
    runner = pool._runner
    assert isinstance(runner, PoolRunner)
    eventually(lambda: not runner._machines, "the pool has no machine left")
    assert len(pool_machines(runtime, pool)) == 1
    pool.shutdown()


def test_start_async_for_an_application_s_lifespan(runtime: Runtime) -> None:
    pool = flyjobs.Pool(min=1, max=2, idle_s=60)
    fn = funcs.pid_of.with_options(pool=pool)

    async def app() -> int:
        async with pool:
            assert len(live(runtime, pool)) == 1
            _, pid = await fn.remote.aio(1)
            return pid

    anyio.run(app)
    assert len(pool_machines(runtime, pool)) == 1
    assert live(runtime, pool) == []


def test_the_first_call_starts_the_pool_s_min_machines(runtime: Runtime) -> None:
    pool = flyjobs.Pool(min=2, max=3, idle_s=60)
    try:
        funcs.pid_of.with_options(pool=pool).remote(1)
        eventually(lambda: len(live(runtime, pool)) == 2, "min machines are up")
    finally:
        pool.shutdown()


def test_start_needs_a_function_that_uses_the_pool(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.ConfigError, match="no function has this pool"):
        flyjobs.Pool(min=1).start()
    flyjobs.Pool(min=0).start()  # nothing to start


def test_cancelling_a_call_leaves_the_others_on_its_machine_running(
    runtime: Runtime, tmp_path: Path
) -> None:
    pool = flyjobs.Pool(max=1, max_concurrency=2, idle_s=60)
    pid_file = tmp_path / "worker.pid"
    try:
        hung = funcs.hang_the_first_time.with_options(pool=pool).spawn(str(pid_file))
        eventually(lambda: pid_file.exists() and pid_file.read_text() != "", "the call started")
        other = funcs.nap.with_options(pool=pool).spawn(2.0)
        eventually(lambda: other.status == "running", "the other call runs")
        assert hung.cancel()
        assert other.result(timeout_s=60) == int(pid_file.read_text())
        with pytest.raises(flyjobs.CallCancelledError):
            hung.result(timeout_s=10)
    finally:
        pool.shutdown()
