"""The fork server the local emulator starts worker machines from (a "zygote").

``python -m flyjobs._machine_side.zygote FD`` imports what every worker imports (``flyjobs.worker``
and msgpack), says it is ready, then serves requests on the ``SOCK_SEQPACKET`` socket ``FD``. Each
request forks a child that becomes one machine's ``python -m flyjobs.worker``: a new session,
the machine's environment, working directory and arguments, its stdout and stderr on the pipe
sent with the request, stdin from ``/dev/null``. A child costs a fork (about a millisecond)
where a fresh interpreter costs its whole start-up (about 20 ms of CPU), which is most of
what a one-input machine spends locally.

Only the emulator uses it, and only for machines whose command is exactly the worker's and
whose start-up variables (`flyjobs._machine_side.forking.STARTUP_ENV`) match the ones this
server started with, so a child starts as a fresh ``python -m flyjobs.worker`` would. What
differs, by design: the child's ``__main__`` is this module, not the worker's, all children
share one string-hash seed, and a child's exit does not finalize its objects (see
`_run_and_exit`).

Messages are msgpack maps, one per datagram. Requests: ``{"fork": [argv, env, cwd]}`` with the
output pipe's write end attached, answered ``{"forked": pid}`` or ``{"failed": reason}``; and
``{"signal": [pid, signum]}``, sent to the child's process group if it has not been reaped
(so a signal never reaches a reused pid). Unasked: ``{"ready": pid}`` once, then
``{"exited": [pid, wait_status]}`` per child, sent after its whole process group was
SIGKILLed (as when a VM stops) and it was reaped. When the emulator's end of the socket
closes, every child's group is killed and the server exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import select
import signal
import socket
import sys
import time

import msgpack  # type: ignore[import-untyped]

# What a worker imports before it runs a function, and what a module of decorated functions
# imports (the decorator), so that a child does not import them again.
import flyjobs._declare.function
import flyjobs.worker
from flyjobs._machine_side.forking import signal_machine

# What a worker imports to check and unpack a call's code bundle (flyjobs._machine_side.code),
# which code sync ships with every call by default: extension modules (a dlopen each).
for _module in ("_sha2", "_sha256", "zlib"):  # _sha2 from Python 3.12, _sha256 before
    with contextlib.suppress(ImportError):
        importlib.import_module(_module)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("main",)

#: Largest request accepted, in bytes (an argv and an environment).
_MAX_REQUEST = 1024 * 1024
#: What a child blocks from its fork until it runs its machine (SIGKILL and SIGSTOP cannot be).
_ALL_SIGNALS = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}


class _Server:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: set[int] = set()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        self.wake_w = wake_w
        # A handler (not SIG_DFL) so that SIGCHLD writes to the wake-up pipe.
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.send(msgpack.packb(message))

    def serve(self) -> tuple[list[str], dict[str, str], str] | None:
        """Serve until the emulator hangs up (return None), or, in a forked child, return
        the machine's (argv, env, cwd)."""
        self.send({"ready": os.getpid()})
        while True:
            readable, _, _ = select.select([self.sock.fileno(), self.wake_r], [], [])
            if self.wake_r in readable:
                os.read(self.wake_r, 4096)
                self.reap()
            if self.sock.fileno() in readable:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, _MAX_REQUEST, 1)
                if not data:
                    self.kill_all()
                    return None
                request = msgpack.unpackb(data)
                if "fork" in request:
                    child = self.fork(request["fork"], fds)
                    if child is not None:
                        return child
                elif "signal" in request:
                    pid, signum = request["signal"]
                    if pid in self.children:
                        signal_machine(pid, signum)

    def fork(self, spec: list[Any], fds: list[int]) -> tuple[list[str], dict[str, str], str] | None:
        argv, env, cwd = spec
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            self.send({"failed": "a fork request must carry one output pipe"})
            return None
        (output,) = fds
        # Signals wait (blocked) until the child runs the machine (`_run_and_exit`): one that
        # reached the child before the interpreter's after-fork reset would be dropped by it,
        # and one during `become_machine` would end it with its traceback on our stderr.
        signal.pthread_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _ALL_SIGNALS)
            os.close(output)
            self.send({"failed": str(exc)})
            return None
        if pid == 0:
            self.become_machine(output)
            return argv, env, cwd
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _ALL_SIGNALS)
        os.close(output)
        self.children.add(pid)
        self.send({"forked": pid})
        return None

    def become_machine(self, output: int) -> None:
        """In the child: leave the server behind and take the machine's process layout."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(null)
        os.close(output)

    def reap(self) -> None:
        while True:
            try:
                # Look without reaping first: until it is reaped the pid is still the group's
                # id, so the group can be killed without hitting a reused pid.
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            signal_machine(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            self.children.discard(pid)
            self.send({"exited": [pid, status]})

    def kill_all(self) -> None:
        for pid in self.children:
            signal_machine(pid, signal.SIGKILL)


def _run_machine(argv: list[str], env: dict[str, str], cwd: str) -> int:
    """In a forked child: run as ``python -m flyjobs.worker ARGS`` would, with ``env``."""
    os.environ.clear()
    os.environ.update(env)
    time.tzset()
    os.chdir(cwd)
    # As `python -m` sets them: the module's file first in argv, the working directory (the
    # machine's root, never the emulator's folder) first on sys.path.
    sys.argv = [flyjobs.worker.__file__, *argv]
    sys.path[0] = cwd
    return flyjobs.worker.main()


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    server = _Server(sock)
    try:
        machine = server.serve()
    except (BrokenPipeError, ConnectionResetError):
        # The emulator went away while this was telling it something: end as at its hang-up.
        server.kill_all()
        return
    if machine is not None:
        _run_and_exit(machine)


def _run_and_exit(machine: tuple[list[str], dict[str, str], str]) -> None:
    """Run the machine and end the child as an interpreter ends, short of finalizing objects.

    The interpreter's own exit still joins non-daemon threads and runs the atexit handlers the
    function registered; the handler registered here first runs last and ends the process
    before the interpreter tears down every module and object. That teardown would touch each
    page this child shares with the server (copy on write): about 12 ms of CPU and 1,600 page
    faults, where the rest of a trivial call costs about 5 ms. As in a fork-started
    multiprocessing child, objects are not finalized at exit (a file left open unflushed loses
    its buffer); stdout and stderr are flushed.
    """
    ending = _Ending()
    atexit.register(ending.now)
    try:
        # Those blocked since the fork arrive now, as KeyboardInterrupt for a SIGINT.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _ALL_SIGNALS)
        ending.status = _run_machine(*machine)
    except SystemExit as exc:
        # As the interpreter reads `sys.exit(code)`: None is 0, other non-integers are printed
        # (by the interpreter, on the way out) and are 1.
        code = exc.code
        ending.status = 0 if code is None else code if isinstance(code, int) else 1
        raise
    except KeyboardInterrupt:
        # An interpreter ended by an uncaught KeyboardInterrupt ends by SIGINT (exit 130).
        ending.signal = signal.SIGINT
        raise
    sys.exit(ending.status)


class _Ending:
    """How a forked machine ends: its exit status, or the signal that ends it."""

    def __init__(self) -> None:
        #: An uncaught exception's status until the machine returns one.
        self.status = 1
        self.signal: int | None = None

    def now(self) -> None:
        try:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
        finally:
            if self.signal is not None:
                signal.signal(self.signal, signal.SIG_DFL)
                os.kill(os.getpid(), self.signal)
            os._exit(self.status)


if __name__ == "__main__":
    main()
