"""Worker machines started by forking a pre-started interpreter (`flyjobs._machine_side.zygote`).

A machine whose command is ``python -m flyjobs.worker …`` would spend most of a one-input run
starting an interpreter and importing the worker. `ForkServers` keeps one
`flyjobs._machine_side.zygote` process per set of start-up variables
(`flyjobs._machine_side.forking.STARTUP_ENV`) that has already done that, and asks it for a fork per
machine. Any other command, a server not ready yet, or one that has failed: the machine is spawned
as a fresh process (`flyjobs.emulator._process`).

Linux only (pidfds, ``SOCK_SEQPACKET``); elsewhere every machine is a fresh process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgpack  # type: ignore[import-untyped]

from .._machine_side.forking import ZYGOTE_MODULE, signal_machine, startup_env
from .._wire.machine import WORKER_CMD
from ._process import USE_PIDFD, ExitStatus, ProcessHandle

__all__ = ("ForkServers",)

#: The worker's command after the interpreter, as `flyjobs._calls.machine_config` sets it.
_WORKER_ARGS = WORKER_CMD[1:]
#: Fork servers kept at most, one per distinct set of start-up variables.
_MAX_SERVERS = 4
#: Seconds to wait for a server's answer to a fork request before giving up on the server.
_ANSWER_S = 5.0
#: Seconds a new server has to become ready before machines are spawned fresh instead.
_START_S = 10.0
_MAX_MESSAGE = 64 * 1024
#: Variables a fork server gets besides its start-up ones (none of a machine's own).
_SERVER_ENV = ("PATH",)


class _ForkedHandle(ProcessHandle):
    """A machine process forked by a fork server: signalled and reaped through it."""

    def __init__(
        self,
        server: _ForkServer,
        pid: int,
        loop: asyncio.AbstractEventLoop,
        on_exit: Callable[[ExitStatus], None],
        output: tuple[int, Callable[[bytes], None]],
    ) -> None:
        self._server = server
        super().__init__(pid, loop, on_exit, output)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process group, through the server (which knows whether
        the pid is still its unreaped child)."""
        if self.running:
            self._server.signal(self.pid, signum)

    def kill_now(self) -> None:
        """SIGKILL the group and wait (briefly, blocking) for the server's word that it is
        reaped; if none comes, report it killed."""
        if self.running:
            self.signal(signal.SIGKILL)
            self._server.wait_for_exit(self.pid)
        if self.running:
            self.exited(-signal.SIGKILL)


class _ForkServer:
    def __init__(self, loop: asyncio.AbstractEventLoop, env: dict[str, str]) -> None:
        self._loop = loop
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", ZYGOTE_MODULE, str(theirs.fileno())],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                # Its own session: a Ctrl-C at the terminal reaches the emulator's process,
                # which then ends its machines; this server ends when the socket closes.
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.ready = False
        self.broken = False
        self._started_at = loop.time()
        self._handles: dict[int, _ForkedHandle] = {}
        self._sock.setblocking(False)
        loop.add_reader(self._sock.fileno(), self._on_messages)

    def fork(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        on_output: Callable[[bytes], None],
        on_exit: Callable[[ExitStatus], None],
    ) -> ProcessHandle | None:
        """A handle on a new child running the worker with ``argv``; None if the server
        could not make one (then it is not asked again)."""
        read_fd, write_fd = os.pipe()
        try:
            request = msgpack.packb({"fork": [argv, env, str(cwd)]})
            try:
                socket.send_fds(self._sock, [request], [write_fd])
            except OSError:
                self._break()
                return None
        finally:
            os.close(write_fd)
        answer = self._answer()
        pid = None if answer is None else answer.get("forked")
        if not isinstance(pid, int):
            os.close(read_fd)
            self._break()
            return None
        handle = _ForkedHandle(self, pid, self._loop, on_exit, (read_fd, on_output))
        self._handles[handle.pid] = handle
        return handle

    def usable(self) -> bool | None:
        """True when ready, False when broken, None while it starts (up to `_START_S`)."""
        if self.broken:
            return False
        if self.ready:
            return True
        if self._loop.time() - self._started_at > _START_S:
            self._break()
            return False
        return None

    def signal(self, pid: int, signum: int) -> None:
        """Have the server signal ``pid``'s group; a server that cannot be told is given up
        (which kills every machine it started): a signal is never lost."""
        if self.broken:
            return
        try:
            self._sock.settimeout(_ANSWER_S)
            self._sock.send(msgpack.packb({"signal": [pid, signum]}))
        except OSError:
            self._break()
        finally:
            if not self.broken:
                self._sock.setblocking(False)

    def wait_for_exit(self, pid: int) -> None:
        """Block until the server reports ``pid`` reaped (at most `_ANSWER_S` a message)."""
        while pid in self._handles and not self.broken:
            message = self._receive()
            if message is None:
                return
            self._note(message)

    def _answer(self) -> dict[str, object] | None:
        """The server's next answer to a request, handling exit reports that come first;
        blocking (a fork takes about a millisecond). None if the server is gone."""
        while True:
            message = self._receive()
            if message is None:
                return None
            if not self._note(message):
                return message

    def _receive(self) -> dict[str, object] | None:
        """The server's next message, blocking up to `_ANSWER_S`; None if none came."""
        try:
            self._sock.settimeout(_ANSWER_S)
            data = self._sock.recv(_MAX_MESSAGE)
        except OSError:
            return None
        finally:
            self._sock.setblocking(False)
        if not data:
            self._break()
            return None
        message: dict[str, object] = msgpack.unpackb(data)
        return message

    def _on_messages(self) -> None:
        while True:
            try:
                data = self._sock.recv(_MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._break()
                return
            self._note(msgpack.unpackb(data))

    def _note(self, message: dict[str, object]) -> bool:
        """Act on an unasked message (ready, exited); False for an answer to a request."""
        if "ready" in message:
            self.ready = True
            return True
        exited = message.get("exited")
        if isinstance(exited, list):
            pid, status = exited
            handle = self._handles.pop(pid, None)
            if handle is not None:
                handle.exited(os.waitstatus_to_exitcode(status))
            return True
        return False

    def _break(self) -> None:
        """The server is gone or misbehaved: stop using it and end what it had started."""
        if self.broken:
            return
        self.broken = True
        self._loop.remove_reader(self._sock.fileno())
        # Its end of the socket closing, the server kills every child's group and exits.
        self._sock.close()
        try:
            self._process.wait(_ANSWER_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        handles, self._handles = self._handles, {}
        for pid, handle in handles.items():
            # In case the server died first: its children were adopted by init, and the
            # group of one not yet reaped can still be killed.
            signal_machine(pid, signal.SIGKILL)
            handle.exited(-signal.SIGKILL)

    def close(self) -> None:
        """End the server (it kills any child it still has) and reap it."""
        self._break()


class ForkServers:
    """The fork servers of one emulator, started on demand, closed with it."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled and USE_PIDFD and hasattr(socket, "send_fds")
        self._servers: dict[frozenset[tuple[str, str]], _ForkServer] = {}

    def starting(self, argv: list[str], env: dict[str, str]) -> bool:
        """True if ``argv`` should wait (its launch retried a moment later) for the fork
        server of ``env``, which is starting; the first worker of a set of start-up variables
        starts that set's server."""
        server = self._server_for(argv, env)
        return server is not None and server.usable() is None

    def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        cwd: Path,
        on_output: Callable[[bytes], None],
        on_exit: Callable[[ExitStatus], None],
    ) -> ProcessHandle | None:
        """A forked worker for ``argv`` in the folder ``cwd`` (the machine's root) if its
        server can make one, else None (then spawn the machine fresh)."""
        server = self._server_for(argv, env)
        if server is None or not server.usable():
            return None
        return server.fork(argv[3:], env, cwd, on_output, on_exit)

    def _server_for(self, argv: list[str], env: dict[str, str]) -> _ForkServer | None:
        if not self._enabled or tuple(argv[1:3]) != _WORKER_ARGS or argv[0] != sys.executable:
            return None
        key = frozenset(startup_env(env).items())
        server = self._servers.get(key)
        if server is None and len(self._servers) < _MAX_SERVERS:
            server_env = {name: env[name] for name in _SERVER_ENV if name in env}
            server = _ForkServer(asyncio.get_running_loop(), {**server_env, **dict(key)})
            self._servers[key] = server
        return server

    def close(self) -> None:
        """End every server."""
        for server in self._servers.values():
            server.close()
        self._servers.clear()
