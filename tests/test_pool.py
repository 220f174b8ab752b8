"""Warm pools (`flyjobs.Pool`) over the embedded emulator: reuse, growth to ``max``, shrinking
after ``idle_s``, a machine killed mid-call, shutdown, and what persists between calls."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pool_funcs as funcs
import pytest
from _pool_helpers import live, pool_machines
from _remote_helpers import machines
from _waiting import eventually

import flyjobs
from flyjobs._calls.runtime import Runtime
from flyjobs._wire.machine import MAX_WAIT_S

pytestmark = pytest.mark.usefixtures("no_machine_left")


def test_the_second_call_runs_on_the_warm_machine(runtime: Runtime) -> None:
    pool = flyjobs.Pool(max=2, idle_s=60)
    fn = funcs.pid_of.with_options(pool=pool)
    try:
        _, first = fn.remote(1)
        assert len(pool_machines(runtime, pool)) == 1
        assert fn.remote(2) == (2, first)
        created = pool_machines(runtime, pool)
        assert len(created) == 1, "the second call created a machine"
        (machine,) = created
        assert machine.config is not None and machine.config.auto_destroy
        assert machine.config.restart is not None and machine.config.restart.policy == "no"
    finally:
        pool.shutdown()
    assert live(runtime, pool) == []  # at once: shutdown waits until they are destroyed


def test_concurrent_calls_grow_the_pool_to_max_and_no_further(
    runtime: Runtime, tmp_path: Path
) -> None:
    pool = flyjobs.Pool(max=3, idle_s=60)
    fn = funcs.meet.with_options(pool=pool)
    try:
        # The first three calls wait for each other: they need three machines at once.
        calls = [fn.spawn(str(tmp_path), x, 3) for x in range(7)]
        results = [call.result(timeout_s=60) for call in calls]
    finally:
        pool.shutdown()
    assert [x for x, _ in results] == list(range(7))
    assert len({pid for _, pid in results}) == 3
    assert len(pool_machines(runtime, pool)) == 3


def test_idle_machines_exit_after_idle_s_down_to_min(runtime: Runtime, tmp_path: Path) -> None:
    pool = flyjobs.Pool(min=1, max=3, idle_s=0.5)
    fn = funcs.meet.with_options(pool=pool)
    try:
        calls = [fn.spawn(str(tmp_path), x, 3) for x in range(3)]
        assert len({call.result(timeout_s=60)[1] for call in calls}) == 3
        eventually(lambda: len(live(runtime, pool)) == 1, "the pool shrank to min=1")
        # Idle periods later, the machine kept at min still serves calls, and nothing grew.
        time.sleep(3 * pool.idle_s)
        (kept,) = live(runtime, pool)
        _, pid = funcs.pid_of.with_options(pool=pool).remote(0)
        assert [m.id for m in live(runtime, pool)] == [kept.id]
        assert len(pool_machines(runtime, pool)) == 3
    finally:
        pool.shutdown()


def test_without_min_an_idle_pool_ends_every_machine(runtime: Runtime) -> None:
    pool = flyjobs.Pool(max=2, idle_s=0.3)
    fn = funcs.pid_of.with_options(pool=pool)
    fn.remote(1)
    eventually(lambda: live(runtime, pool) == [], "the idle machine exited")
    # Destroyed by auto_destroy after its worker exited, not by the client.
    (machine,) = pool_machines(runtime, pool)
    assert machine.state == "destroyed"
    assert fn.remote(2)[0] == 2  # a fresh machine for the next call
    pool.shutdown()


def test_a_machine_killed_mid_call_is_replaced_and_the_call_retried(
    runtime: Runtime, tmp_path: Path
) -> None:
    pool = flyjobs.Pool(max=1, idle_s=60)
    pid_file = tmp_path / "worker.pid"
    fn = funcs.hang_the_first_time.with_options(pool=pool, retries=1)
    try:
        call = fn.spawn(str(pid_file))
        eventually(lambda: pid_file.exists() and pid_file.read_text() != "", "the call started")
        killed = int(pid_file.read_text())
        os.kill(killed, signal.SIGKILL)
        replacement = call.result(timeout_s=60)
        assert replacement != killed
        # The pool recovered: its one machine (max=1) now serves further calls.
        assert fn.remote(str(pid_file)) == replacement
        assert len(pool_machines(runtime, pool)) == 2
    finally:
        pool.shutdown()


def test_a_retried_call_goes_to_an_idle_machine_first(runtime: Runtime, tmp_path: Path) -> None:
    pool = flyjobs.Pool(max=2, idle_s=60)
    meet = tmp_path / "meet"
    meet.mkdir()
    try:
        calls = [funcs.meet.with_options(pool=pool).spawn(str(meet), x, 2) for x in range(2)]
        pids = {call.result(timeout_s=60)[1] for call in calls}
        assert len(pids) == 2
        pid_file = tmp_path / "worker.pid"
        fn = funcs.hang_the_first_time.with_options(pool=pool, retries=1)
        call = fn.spawn(str(pid_file))
        eventually(lambda: pid_file.exists() and pid_file.read_text() != "", "the call started")
        killed = int(pid_file.read_text())
        os.kill(killed, signal.SIGKILL)
        assert call.result(timeout_s=60) == (pids - {killed}).pop()
        assert len(pool_machines(runtime, pool)) == 2  # no machine created for the retry
    finally:
        pool.shutdown()


def test_a_killed_machine_without_retries_fails_the_call_only(
    runtime: Runtime, tmp_path: Path
) -> None:
    pool = flyjobs.Pool(max=1, idle_s=60)
    pid_file = tmp_path / "worker.pid"
    fn = funcs.hang_the_first_time.with_options(pool=pool)
    try:
        call = fn.spawn(str(pid_file))
        eventually(lambda: pid_file.exists() and pid_file.read_text() != "", "the call started")
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with pytest.raises(flyjobs.MachineCrashedError):
            call.result(timeout_s=60)
        assert isinstance(fn.remote(str(pid_file)), int)
    finally:
        pool.shutdown()


def test_a_call_timeout_still_bounds_a_pooled_call(runtime: Runtime, tmp_path: Path) -> None:
    pool = flyjobs.Pool(max=1, idle_s=60)
    fn = funcs.hang_the_first_time.with_options(pool=pool, timeout_s=1)
    try:
        with pytest.raises(flyjobs.CallTimeoutError):
            fn.remote(str(tmp_path / "worker.pid"))
        assert isinstance(fn.remote(str(tmp_path / "worker.pid")), int)
    finally:
        pool.shutdown()


def test_shutdown_destroys_busy_machines_and_cancels_queued_calls(
    runtime: Runtime, tmp_path: Path
) -> None:
    pool = flyjobs.Pool(max=1, idle_s=60)
    pid_file = tmp_path / "worker.pid"
    fn = funcs.hang_the_first_time.with_options(pool=pool)
    running = fn.spawn(str(pid_file))
    queued = fn.spawn(str(pid_file))
    eventually(lambda: pid_file.exists() and pid_file.read_text() != "", "the call started")
    pool.shutdown()
    assert live(runtime, pool) == []
    for call in (running, queued):
        with pytest.raises(flyjobs.CallCancelledError):
            call.result(timeout_s=10)


def test_cancelling_a_pooled_call_destroys_its_machine_only(
    runtime: Runtime, tmp_path: Path
) -> None:
    pool = flyjobs.Pool(max=1, idle_s=60)
    pid_file = tmp_path / "worker.pid"
    fn = funcs.hang_the_first_time.with_options(pool=pool)
    try:
        call = fn.spawn(str(pid_file))
        eventually(lambda: pid_file.exists() and pid_file.read_text() != "", "the call started")
        assert call.cancel()
        eventually(lambda: live(runtime, pool) == [], "the cancelled call's machine is gone")
        assert isinstance(fn.remote(str(pid_file)), int)  # the pool starts another
    finally:
        pool.shutdown()


def test_a_pooled_call_cannot_be_detached(runtime: Runtime) -> None:
    pool = flyjobs.Pool(max=1)
    with pytest.raises(flyjobs.ConfigError, match="detached"):
        funcs.pid_of.with_options(pool=pool).spawn_detached(1)
    assert pool_machines(runtime, pool) == []


def test_module_state_persists_between_calls_on_a_machine(runtime: Runtime) -> None:
    pool = flyjobs.Pool(max=1, idle_s=60)
    fn = funcs.remember.with_options(pool=pool)
    try:
        assert fn.remote(1) == [1]
        assert fn.remote(2) == [1, 2]
    finally:
        pool.shutdown()
    assert funcs.remember.remote(3) == [3]  # without a pool: a fresh process per call


def test_pool_settings_are_checked_before_any_machine(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.ConfigError, match="max"):
        flyjobs.Pool(max=0)
    with pytest.raises(flyjobs.ConfigError, match="min"):
        flyjobs.Pool(min=3, max=2)
    with pytest.raises(flyjobs.ConfigError, match="max_concurrency"):
        flyjobs.Pool(max_concurrency=0)
    with pytest.raises(flyjobs.ConfigError, match="max_concurrency"):
        flyjobs.Pool(max_concurrency=2.0)  # type: ignore[arg-type]
    with pytest.raises(flyjobs.ConfigError, match="idle_s"):
        flyjobs.Pool(idle_s=0)
    with pytest.raises(flyjobs.ConfigError, match="flyjobs.Pool"):
        funcs.pid_of.with_options(pool=8)  # type: ignore[arg-type]


@pytest.mark.parametrize("huge", [1e12, float("inf")])
def test_waits_longer_than_a_machine_can_keep_are_refused_before_any_machine(
    runtime: Runtime, huge: float
) -> None:
    # A worker arms its deadline watchdog that far ahead: past a platform time_t it crashed
    # after the machine was created.
    before = machines(runtime)
    with pytest.raises(flyjobs.ConfigError, match="timeout_s=.*at most"):
        funcs.pid_of.with_options(timeout_s=huge).remote(1)
    with pytest.raises(flyjobs.ConfigError, match="idle_s=.*at most"):
        funcs.pid_of.with_options(pool=flyjobs.Pool(idle_s=huge)).remote(1)
    assert machines(runtime) == before
    pool = flyjobs.Pool(max=1, idle_s=MAX_WAIT_S)
    try:
        assert funcs.pid_of.with_options(pool=pool, timeout_s=MAX_WAIT_S).remote(2)[0] == 2
    finally:
        pool.shutdown()


def test_one_pool_serves_one_machine_shape(runtime: Runtime) -> None:
    pool = flyjobs.Pool(max=1, idle_s=60)
    try:
        funcs.pid_of.with_options(pool=pool).remote(1)
        bigger = funcs.pid_of.with_options(pool=pool, memory_mb=512)
        with pytest.raises(flyjobs.ConfigError, match="own flyjobs.Pool"):
            bigger.remote(2)
    finally:
        pool.shutdown()
