"""Machine processes: spawn, reap without a thread per process, signal, and enforce memory.

A process is spawned with `subprocess.Popen` (no ``preexec_fn``, so CPython can use vfork) in a
new session, so its whole tree shares one process group that can be signalled at once. On Linux
its exit is noticed through ``os.pidfd_open`` watched by the event loop, not by a waiting thread
(Python 3.11's asyncio child watcher spends one thread per child), and memory is read from
``/proc``. Elsewhere (macOS) a daemon thread waits for each process and psutil reads memory:
slower, but the embedded emulator works there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ._ids import now_ms

__all__ = (
    "CommandResult",
    "ExitStatus",
    "MemoryMonitor",
    "ProcessHandle",
    "run_command",
    "spawn",
    "wait_groups_gone",
)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: Bytes read from a machine's output pipe at a time, and reads at most when it has exited
#: (a pipe holds 64 KiB unless the process grew it; beyond that, writes of escaped processes).
_READ_BYTES = 65536
_DRAIN_READS = 16
#: Whether exits are watched through pidfds (Linux), else by a waiting thread per process.
USE_PIDFD = hasattr(os, "pidfd_open")
#: Whether memory is read from /proc (Linux), else through psutil.
USE_PROC = os.path.isdir("/proc/self")


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a machine's main process ended.

    ``exit_code`` is the process's own code, or 128 + the signal number when a signal killed
    it (as a shell reports it); ``signal`` is that signal number, else -1, as in Fly's
    ``exit_event``.
    """

    exit_code: int
    signal: int
    oom_killed: bool
    exited_at_ms: int


class ProcessHandle:
    """One running process tree. ``done`` resolves with its `ExitStatus` once it is reaped.

    How the process is reaped and signalled depends on who started it: `spawn` (a child of
    this process) or a fork server (`flyjobs.emulator._forks`).
    """

    def __init__(
        self,
        pid: int,
        loop: asyncio.AbstractEventLoop,
        on_exit: Callable[[ExitStatus], None],
        output: tuple[int, Callable[[bytes], None]] | None = None,
    ) -> None:
        self.pid = pid
        self.oom_killed = False
        self.done: asyncio.Future[ExitStatus] = loop.create_future()
        self._loop = loop
        self._on_exit = on_exit
        self._kill_timer: asyncio.TimerHandle | None = None
        self._output = output
        if output is not None:
            os.set_blocking(output[0], False)
            loop.add_reader(output[0], self._read_output)

    @property
    def running(self) -> bool:
        """True until the process has been reaped."""
        return not self.done.done()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (no-op once the leader is reaped)."""
        raise NotImplementedError

    def kill_now(self) -> None:
        """SIGKILL the group and reap it at once, blocking briefly (used at shutdown)."""
        raise NotImplementedError

    def kill_after(self, delay_s: float) -> None:
        """SIGKILL the group if it is still running ``delay_s`` seconds from now."""
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self._kill_timer = self._loop.call_later(delay_s, self.signal, signal.SIGKILL)

    def kill_for_memory(self) -> None:
        """SIGKILL the group because it used more memory than its machine has."""
        if self.running:
            self.oom_killed = True
            self.signal(signal.SIGKILL)

    def _read_output(self, reads: int = 1) -> None:
        """Pass on up to ``reads`` chunks the pipe holds now; close it at end of file.

        One chunk per wake-up, so a machine printing without pause cannot hold the loop.
        """
        for _ in range(reads):
            if self._output is None:
                return
            fd, sink = self._output
            try:
                data = os.read(fd, _READ_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_output()
                return
            sink(data)

    def _close_output(self) -> None:
        if self._output is not None:
            fd, _sink = self._output
            self._output = None
            self._loop.remove_reader(fd)
            os.close(fd)

    def exited(self, code: int) -> None:
        """Report the reaped main process's end: ``code`` as `subprocess.Popen.returncode`
        gives it (negative: killed by that signal). Its group was killed first."""
        if self.done.done():
            return
        # All the main process wrote is in the pipe: take it before the exit is reported. The
        # pipe is then closed even if a process that left the group still holds it.
        self._read_output(reads=_DRAIN_READS)
        self._close_output()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        status = ExitStatus(
            exit_code=128 - code if code < 0 else code,
            signal=-code if code < 0 else -1,
            oom_killed=self.oom_killed,
            exited_at_ms=now_ms(),
        )
        self.done.set_result(status)
        self._on_exit(status)


class _ChildHandle(ProcessHandle):
    """A child of this process, started by `subprocess.Popen`."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        loop: asyncio.AbstractEventLoop,
        on_exit: Callable[[ExitStatus], None],
        output: tuple[int, Callable[[bytes], None]] | None = None,
    ) -> None:
        super().__init__(popen.pid, loop, on_exit, output)
        self._popen = popen
        self._pidfd: int | None = None
        if USE_PIDFD:
            self._pidfd = os.pidfd_open(popen.pid)
            loop.add_reader(self._pidfd, self._reap)
        else:
            threading.Thread(target=self._wait_in_thread, daemon=True).start()

    def _wait_in_thread(self) -> None:
        self._popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop closed first (shutdown)
            self._loop.call_soon_threadsafe(self._reap)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (no-op once the leader is reaped)."""
        if self._popen.returncode is None:
            # Until the leader is reaped it is at worst a zombie, so its pid (= the group id)
            # cannot have been reused by an unrelated process.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def kill_now(self) -> None:
        """SIGKILL the group and reap it at once, blocking briefly (used at shutdown)."""
        if self.running:
            self.signal(signal.SIGKILL)
            self._popen.wait()
            self._reap()

    def _reap(self) -> None:
        if self.done.done():
            return
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        # The main process ended: like a VM shutting down, nothing else in its group survives.
        self.signal(signal.SIGKILL)
        self.exited(self._popen.wait())


def spawn(
    argv: list[str],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    on_output: Callable[[bytes], None],
    on_exit: Callable[[ExitStatus], None],
) -> ProcessHandle:
    """Start ``argv`` in a new session; its stdout and stderr, one pipe, go to ``on_output``.

    Only the emulator holds the pipe's read end, so the process cannot write anywhere else
    that the logs API serves. The working directory is ``cwd``: a machine's is its root, never
    the caller's folder, so that it imports what a Fly machine would (the installed
    distributions, standing in for the image, and the code its calls ship).

    :raises OSError: when the program cannot be started (not found, not executable).
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return _ChildHandle(popen, loop, on_exit, (read_fd, on_output))


def _spawn_to_files(
    argv: list[str], env: dict[str, str], folder: Path, on_exit: Callable[[ExitStatus], None]
) -> ProcessHandle:
    """Start ``argv`` in a new session reading ``folder/stdin``, writing ``folder/stdout`` and
    ``folder/stderr`` (for exec, whose output is returned, never logged)."""
    loop = asyncio.get_running_loop()
    with contextlib.ExitStack() as files:
        stdout = files.enter_context((folder / "stdout").open("ab"))
        stderr = files.enter_context((folder / "stderr").open("ab"))
        stdin = files.enter_context((folder / "stdin").open("rb"))
        popen = subprocess.Popen(
            argv, env=env, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True
        )
    return _ChildHandle(popen, loop, on_exit)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Outcome of `run_command`."""

    exit_code: int
    signal: int
    stdout: bytes
    stderr: bytes


async def run_command(
    argv: list[str], env: dict[str, str], *, stdin: bytes, limit_s: float
) -> CommandResult:
    """Run ``argv`` to completion and capture its output (for exec).

    :raises TimeoutError: when it runs longer than ``limit_s``; its group is killed first.
    :raises OSError: when the program cannot be started.
    """
    with tempfile.TemporaryDirectory(prefix="flyjobs-exec-") as scratch:
        folder = Path(scratch)
        (folder / "stdin").write_bytes(stdin)
        handle = _spawn_to_files(argv, env, folder, lambda _status: None)
        try:
            async with asyncio.timeout(limit_s):
                status = await asyncio.shield(handle.done)
        except TimeoutError:
            handle.signal(signal.SIGKILL)
            await handle.done
            raise
        return CommandResult(
            exit_code=status.exit_code,
            signal=status.signal,
            stdout=(folder / "stdout").read_bytes(),
            stderr=(folder / "stderr").read_bytes(),
        )


class MemoryMonitor:
    """One polling task that kills any watched process group using more than its limit.

    Every ``interval_s`` it reads ``/proc`` once (in a worker thread, so the event loop keeps
    answering) and sums the resident memory of each watched group.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._limits: dict[int, tuple[ProcessHandle, int]] = {}

    def watch(self, handle: ProcessHandle, limit_mb: int) -> None:
        """Enforce ``limit_mb`` megabytes on ``handle``'s group until it exits."""
        self._limits[handle.pid] = (handle, limit_mb * 1024 * 1024)
        handle.done.add_done_callback(lambda _: self._unwatch(handle))

    def _unwatch(self, handle: ProcessHandle) -> None:
        watched = self._limits.get(handle.pid)
        if watched is not None and watched[0] is handle:
            del self._limits[handle.pid]

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            if not self._limits:
                continue
            pgids = frozenset(self._limits)
            try:
                usage = await asyncio.to_thread(_group_rss, pgids)
            except RuntimeError:
                # The interpreter is exiting (an embedded emulator stopping from atexit) and
                # takes no new worker threads: read memory on the loop for these last polls.
                usage = _group_rss(pgids)
            for pgid, rss in usage.items():
                watched = self._limits.get(pgid)
                if watched is not None and rss > watched[1]:
                    watched[0].kill_for_memory()


def _group_rss(pgids: frozenset[int]) -> dict[int, int]:
    """Resident bytes per process group, for the groups in ``pgids``."""
    if not USE_PROC:
        return _group_rss_psutil(pgids)
    usage = dict.fromkeys(pgids, 0)
    for stat in _proc_stats():
        # Fields after the parenthesised command name: state ppid pgrp ... rss is the 22nd.
        fields = stat[stat.rfind(")") + 2 :].split()
        pgrp = int(fields[2])
        if pgrp in usage:
            usage[pgrp] += int(fields[21]) * _PAGE_SIZE
    return usage


def wait_groups_gone(pgids: Iterable[int], timeout_s: float) -> None:
    """Block until no process of the groups ``pgids`` is running any more (a zombie counts as
    gone), or ``timeout_s`` seconds passed. A machine's own process is reaped when it is
    killed; the processes it started die of the same signal a moment later, which a stop
    that returns at once would not wait for. Without /proc, returns at once."""
    groups = frozenset(pgids)
    if not groups or not USE_PROC:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = False
        for stat in _proc_stats():  # to its end: the scan's directory is closed there
            # Fields after the parenthesised command name: state ppid pgrp ...
            fields = stat[stat.rfind(")") + 2 :].split()
            running |= int(fields[2]) in groups and fields[0] not in ("Z", "X")
        if not running:
            return
        time.sleep(0.005)


def _group_rss_psutil(pgids: frozenset[int]) -> dict[int, int]:
    # Only where /proc is missing: psutil asks the kernel process by process, which is slower.
    import psutil

    usage = dict.fromkeys(pgids, 0)
    for process in psutil.process_iter():
        try:
            pgrp = os.getpgid(process.pid)
            if pgrp in usage:
                usage[pgrp] += process.memory_info().rss
        except (OSError, psutil.Error):
            continue
    return usage


def _proc_stats() -> Iterator[str]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                    yield f.read()
            except OSError:
                continue
