"""Machine runs: launch, exit handling with restart policies, stop, replace, destroy, schedules.

Transitions follow Fly: a launch goes ``starting → started``; a process that ends goes
``stopping → stopped`` with an ``exit`` event, unless the restart policy restarts it
(``started → starting``); an ``auto_destroy`` machine then goes ``destroying → destroyed``,
and a destroyed machine stays readable for ``retention_s`` before it is forgotten. A suspended
machine's start goes ``starting`` for ``resume_delay_s``, then ``started`` with the same process,
or (a ``cold_resume_share`` of them) with a new run, as a resume Fly cannot make cold-boots.
"""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

from .._wire.machine import TIME_ORIGIN_ENV, TIME_SCALE_ENV
from ._config import EmulatorConfig
from ._errors import ErrorReply
from ._forks import ForkServers
from ._ids import now_ms, rfc3339_ms
from ._launch import Identity, free_files, plan_launch, prepare_root
from ._machine import MachineRecord
from ._process import ExitStatus, MemoryMonitor, spawn
from ._validate import SCHEDULE_INTERVALS_S, effective_guest, restart_policy, stop_settings

__all__ = ("Lifecycle",)

#: Exit code of a run whose program could not be started, as a shell reports it.
_EXIT_NOT_STARTED = 127
#: Seconds between looks at a fork server that is starting, for a worker machine waiting on it.
_FORK_SERVER_POLL_S = 0.005


class Lifecycle:
    """Drives the runs of every machine. All methods run on the emulator's event loop."""

    def __init__(
        self,
        config: EmulatorConfig,
        monitor: MemoryMonitor,
        forget: Callable[[MachineRecord], None],
    ) -> None:
        self._config = config
        self._monitor = monitor
        self._forget = forget
        self._forks = ForkServers(config.fork_server)
        self._timers: set[asyncio.TimerHandle] = set()
        # Which resumes cold-boot: seeded like the fault dice, so a run can be replayed.
        self._cold_dice = random.Random(config.seed)
        self.closing = False
        # The instant scaled time starts from: machines get it with the scale (TIME_SCALE_ENV).
        self._time_origin = time.time() if config.time_origin is None else config.time_origin

    # Runs -----------------------------------------------------------------------------------

    def launch(self, machine: MachineRecord, *, new_run: bool, delay_s: float = 0.0) -> None:
        """Start a run: ``starting``, then (after ``delay_s`` plus ``boot_delay_s``) spawn and
        ``started``."""
        if self.closing:
            return
        if new_run:
            machine.new_run()
        machine.set_state("starting")
        # Spawning from the loop, not inline, lets the request that launched the machine
        # answer first, with the state Fly shows at that point (created, or starting).
        loop = asyncio.get_running_loop()
        delay_s += self._config.boot_delay_s
        if delay_s > 0:
            machine.boot_timer = loop.call_later(delay_s, self._spawn, machine)
        else:
            machine.boot_timer = loop.call_soon(self._spawn, machine)

    def _spawn(self, machine: MachineRecord) -> None:
        machine.boot_timer = None
        identity = Identity(
            machine.app_name, machine.id, machine.region, machine.version, machine.private_ip
        )
        image = machine.config["image"]
        if image in self._config.failing_images:
            self._launch_failed(machine, f"failed to pull image {image!r} (failing_images)")
            return
        argv0 = "?"
        try:
            plan = plan_launch(
                identity,
                machine.config,
                machine.secrets,
                self._config.image_commands,
                machine.machine_dir,
                pass_env=self._config.pass_env,
            )
            argv0 = plan.argv[0] if plan.argv else ""
            env = plan.env
            if self._config.time_scale != 1:
                env = {
                    **env,
                    TIME_SCALE_ENV: repr(self._config.time_scale),
                    TIME_ORIGIN_ENV: repr(self._time_origin),
                }
            if self._forks.starting(plan.argv, env):
                # Boot a moment longer: the fork server this worker will start from is starting.
                loop = asyncio.get_running_loop()
                machine.boot_timer = loop.call_later(_FORK_SERVER_POLL_S, self._spawn, machine)
                return
            persist = (machine.config.get("rootfs") or {}).get("persist")
            root = prepare_root(machine.machine_dir, plan.files, keep=persist == "always")
            on_exit = functools.partial(self._on_exit, machine)
            handle = self._forks.spawn(
                plan.argv, env, cwd=root, on_output=machine.output.feed, on_exit=on_exit
            ) or spawn(plan.argv, env, cwd=root, on_output=machine.output.feed, on_exit=on_exit)
        # Runs as a loop callback: an exception let through would be lost and leave the machine
        # in "starting" forever, so every failure to launch ends the run here.
        except Exception as exc:
            self._launch_failed(machine, f"failed to spawn command {argv0!r}: {_reason(exc)}")
            return
        machine.handle = handle
        self._monitor.watch(handle, effective_guest(machine.config)[2])
        machine.set_state("started", ("start", "flyd"))

    def _launch_failed(self, machine: MachineRecord, message: str) -> None:
        """End a run that never started: an ``exit`` event, state ``failed``, no restart.

        As on Fly, a machine that fails to launch is ``failed`` (a persistent state it can be
        started, updated or destroyed from); an ``auto_destroy`` one is then destroyed, unless
        the emulator's ``keep_failed`` leaves it, as Fly may.
        """
        machine.output.note(f"Error: {message}")
        pending, machine.pending = machine.pending, None
        request = {
            "exit_event": {
                "exit_code": _EXIT_NOT_STARTED,
                "guest_exit_code": _EXIT_NOT_STARTED,
                "guest_signal": -1,
                "oom_killed": False,
                "requested_stop": pending is not None,
                "restarting": False,
                "signal": -1,
                "exited_at": rfc3339_ms(now_ms()),
            },
            "restart_count": machine.restart_count,
        }
        machine.set_state("failed", ("exit", "flyd"), request)
        auto_destroy = machine.config.get("auto_destroy") and not self._config.keep_failed
        if pending == "destroy" or auto_destroy:
            self.destroy(machine, source="user" if pending == "destroy" else "flyd")

    def _on_exit(self, machine: MachineRecord, status: ExitStatus) -> None:
        machine.handle = None
        machine.output.flush()
        pending, machine.pending = machine.pending, None
        restart = not self.closing and self._should_restart(machine, pending, status)
        request = {
            "exit_event": {
                "exit_code": status.exit_code,
                "guest_exit_code": status.exit_code,
                "guest_signal": status.signal,
                "oom_killed": status.oom_killed,
                "requested_stop": pending is not None,
                "restarting": restart,
                "signal": status.signal,
                "exited_at": rfc3339_ms(status.exited_at_ms),
            },
            "restart_count": machine.restart_count,
        }
        if pending == "replace":
            machine.add_event("exit", "stopped", "flyd", request)
            return
        if pending == "cold_resume":
            machine.add_event("exit", "stopped", "flyd", request)
            self.launch(machine, new_run=False, delay_s=self._config.resume_delay_s)
            return
        if restart:
            machine.add_event("exit", "stopped", "flyd", request)
            if pending == "restart":
                self.launch(machine, new_run=True)
                return
            machine.restart_count += 1
            self.launch(machine, new_run=False, delay_s=self._backoff_s(machine.restart_count))
            return
        if machine.state != "stopping":
            machine.set_state("stopping")
        machine.set_state("stopped", ("exit", "flyd"), request)
        if pending == "destroy" or machine.config.get("auto_destroy"):
            self.destroy(machine, source="user" if pending == "destroy" else "flyd")

    def _backoff_s(self, restarts: int) -> float:
        """Seconds before the policy's ``restarts``-th restart in a row: a program that exits at
        once is restarted a few times a second at first, then every ``restart_backoff_max_s``.

        Fly restarts crashed machines with a delay too (its length is not documented).
        """
        first_s = self._config.restart_backoff_s
        return float(min(self._config.restart_backoff_max_s, first_s * 2 ** min(restarts - 1, 30)))

    def _should_restart(
        self, machine: MachineRecord, pending: str | None, status: ExitStatus
    ) -> bool:
        if pending is not None:
            return pending == "restart"
        policy, max_retries = restart_policy(machine.config)
        if policy == "always":
            return True
        failed = status.exit_code != 0 or status.oom_killed
        return policy == "on-failure" and failed and machine.restart_count < max_retries

    # Requests from the API ------------------------------------------------------------------

    def stop(self, machine: MachineRecord, signum: int | None, timeout_s: float | None) -> None:
        """Stop the current run: signal the group, SIGKILL after the timeout.

        ``signum``/``timeout_s`` default to the machine's ``stop_config`` (SIGINT, then the
        emulator's ``default_stop_timeout_s``). A machine still booting simply does not boot.

        :raises ErrorReply: 409 while the machine is being replaced.
        """
        _refuse_while_replacing(machine)
        booting = machine.boot_timer is not None and machine.handle is None  # not resuming
        if machine.state == "starting" and booting:
            assert machine.boot_timer is not None
            machine.boot_timer.cancel()
            machine.boot_timer = None
            machine.set_state("stopping", ("stop", "user"))
            machine.set_state("stopped")
            if machine.config.get("auto_destroy"):
                self.destroy(machine, source="flyd")
            return
        if machine.handle is None:
            return
        self._end_run(machine, "stop", signum, timeout_s)

    def restart(self, machine: MachineRecord, signum: int | None, timeout_s: float | None) -> None:
        """Stop the current run and start a new one (or start a machine that is not running).

        :raises ErrorReply: 409 while the machine is being replaced.
        """
        _refuse_while_replacing(machine)
        if machine.handle is None:
            if machine.boot_timer is None:
                self.launch(machine, new_run=True)
            return
        self._end_run(machine, "restart", signum, timeout_s)

    def _end_run(
        self,
        machine: MachineRecord,
        action: str,
        signum: int | None,
        timeout_s: float | None,
    ) -> None:
        """End the running machine's current run for the user's ``action`` (``"stop"`` or
        ``"restart"``, which then starts a new one)."""
        assert machine.handle is not None
        suspended = machine.state == "suspended" or self._cancel_resume(machine)
        machine.pending = action
        machine.new_run()  # a wait for "started" from now on means a later run
        machine.set_state("stopping", (action, "user"))
        if suspended:
            # Fly: stopping a suspended machine discards its snapshot; nothing runs to ask.
            machine.handle.signal(signal.SIGKILL)
            return
        self._signal_stop(machine, signum, timeout_s)

    def suspend(self, machine: MachineRecord) -> None:
        """``started → suspending → suspended``: the process group is frozen (SIGSTOP), as Fly
        snapshots a suspended machine's memory; `resume` carries on where it stopped.

        :raises ErrorReply: 409 unless the machine is started.
        """
        if machine.state != "started" or machine.handle is None:
            raise ErrorReply(
                409, f"machine {machine.id} is {machine.state}; only a started machine suspends"
            )
        machine.new_run()  # a wait for "started" from now on means the resumed run
        machine.set_state("suspending", ("suspend", "user"))
        machine.handle.signal(signal.SIGSTOP)
        machine.set_state("suspended", ("suspend", "flyd"))

    def resume(self, machine: MachineRecord) -> None:
        """``suspended → starting → started``: after ``resume_delay_s`` the frozen processes
        continue (SIGCONT); a ``cold_resume_share`` of resumes kill them and start a new run
        instead (Fly does not promise that a snapshot resumes)."""
        handle = machine.handle
        if handle is None:  # its process died while frozen (killed from outside)
            self.launch(machine, new_run=True)
            return
        machine.new_run()
        machine.set_state("starting")
        if self._cold_dice.random() < self._config.cold_resume_share:
            machine.pending = "cold_resume"
            handle.signal(signal.SIGKILL)  # `_on_exit` launches the new run
            return
        loop = asyncio.get_running_loop()
        machine.boot_timer = loop.call_later(self._config.resume_delay_s, self._thaw, machine)

    def _thaw(self, machine: MachineRecord) -> None:
        machine.boot_timer = None
        if machine.handle is None:  # it died while its resume was under way
            return
        machine.handle.signal(signal.SIGCONT)
        machine.set_state("started", ("start", "user"))

    @staticmethod
    def _cancel_resume(machine: MachineRecord) -> bool:
        """Whether ``machine`` was resuming (its process still frozen); its resume is off."""
        if machine.boot_timer is None or machine.handle is None:
            return False
        machine.boot_timer.cancel()
        machine.boot_timer = None
        return True

    async def kill_and_destroy(self, machine: MachineRecord) -> None:
        """SIGKILL a running machine and destroy it once it has exited."""
        handle = machine.handle
        if machine.boot_timer is not None:
            machine.boot_timer.cancel()
            machine.boot_timer = None
        if handle is None:
            self.destroy(machine, source="user")
            return
        machine.pending = "destroy"
        handle.signal(signal.SIGKILL)
        await asyncio.shield(handle.done)

    async def replace(
        self, machine: MachineRecord, version: str, config: dict[str, Any], *, launch: bool
    ) -> None:
        """Update to a new version: ``replacing``, stop the old run, start the new one.

        The new version starts unless ``launch`` is False, whatever state the old one was in
        (Fly "recreates the Machine with the new config, and, by default, starts it"); a
        scheduled machine starts only on its schedule.
        """
        was_running = machine.handle is not None or machine.boot_timer is not None
        previous = machine.state
        machine.set_state("replacing", ("update", "user"))
        if machine.boot_timer is not None:
            machine.boot_timer.cancel()
            machine.boot_timer = None
        handle = machine.handle
        if handle is not None:
            machine.pending = "replace"
            self._signal_stop(machine, None, None)
            await asyncio.shield(handle.done)
            if machine.state == "destroyed":  # force-deleted while its old run was stopping
                return
        machine.replace_version(version, config)
        if launch and (was_running or not config.get("schedule")):
            self.launch(machine, new_run=False)
        else:
            machine.set_state("stopped" if was_running else previous)
        self.schedule(machine)

    def destroy(self, machine: MachineRecord, *, source: str) -> None:
        """``destroying → destroyed``; forget the machine after ``retention_s``.

        Its files go at once; only its record and output stay readable while retained.
        """
        machine.set_state("destroying")
        machine.lease = None
        if machine.schedule_timer is not None:
            machine.schedule_timer.cancel()
            machine.schedule_timer = None
        free_files(machine.machine_dir)
        machine.set_state("destroyed", ("destroy", source))
        if not self.closing:
            self._call_later(self._config.retention_s, self._remove, machine)

    def _remove(self, machine: MachineRecord) -> None:
        self._forget(machine)
        shutil.rmtree(machine.machine_dir, ignore_errors=True)

    def _signal_stop(
        self, machine: MachineRecord, signum: int | None, timeout_s: float | None
    ) -> None:
        default_sig, default_timeout_s = stop_settings(
            machine.config, default_timeout_s=self._config.default_stop_timeout_s
        )
        handle = machine.handle
        if handle is not None:
            handle.signal(default_sig if signum is None else signum)
            handle.kill_after(default_timeout_s if timeout_s is None else timeout_s)

    # Schedules ------------------------------------------------------------------------------

    def schedule(self, machine: MachineRecord) -> None:
        """Arm ``config.schedule``: runs every interval (÷ ``time_scale``) from creation."""
        if machine.schedule_timer is not None:
            machine.schedule_timer.cancel()
            machine.schedule_timer = None
        interval = SCHEDULE_INTERVALS_S.get(machine.config.get("schedule") or "")
        if interval is None or machine.state == "destroyed":
            return
        period_s = interval / self._config.time_scale
        elapsed_s = time.time() - machine.created_at
        delay_s = period_s - (elapsed_s % period_s)
        machine.schedule_timer = asyncio.get_running_loop().call_later(
            delay_s, self._scheduled_run, machine
        )

    def _scheduled_run(self, machine: MachineRecord) -> None:
        machine.schedule_timer = None
        if machine.state in ("created", "stopped", "failed"):
            self.launch(machine, new_run=True)
        self.schedule(machine)

    # Shutdown -------------------------------------------------------------------------------

    def close(self, machines: Iterable[MachineRecord]) -> None:
        """Kill every machine process (and reap it), cancel timers, answer every waiter."""
        self.closing = True
        for timer in self._timers:
            timer.cancel()
        for machine in machines:
            for pending_timer in (machine.boot_timer, machine.schedule_timer):
                if pending_timer is not None:
                    pending_timer.cancel()
            if machine.handle is not None:
                machine.handle.kill_now()
            machine.fail_waiters(ErrorReply(503, "the emulator is shutting down"))
        self._forks.close()

    def _call_later(
        self, delay_s: float, callback: Callable[[MachineRecord], None], machine: MachineRecord
    ) -> None:
        def fire() -> None:
            self._timers.discard(timer)
            callback(machine)

        timer = asyncio.get_running_loop().call_later(delay_s, fire)
        self._timers.add(timer)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, ErrorReply):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _refuse_while_replacing(machine: MachineRecord) -> None:
    if machine.state == "replacing":
        raise ErrorReply(409, f"machine {machine.id} is being replaced; try again")
