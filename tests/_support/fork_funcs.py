"""Remote functions of the fork server tests: what a worker process sees of itself."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from typing import Any

import flyjobs

#: Bumped by each call: a fresh machine must start it from zero.
CALLS = 0


@flyjobs.remote(timeout_s=60)
def probe() -> dict[str, Any]:
    """The process facts a machine's worker should see alike however it was started."""
    global CALLS
    CALLS += 1
    return {
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
        "path0": sys.path[0],
        "executable": sys.executable,
        "own_session": os.getsid(0) == os.getpid(),
        "own_group": os.getpgid(0) == os.getpid(),
        "stdin": sys.stdin.read(),
        "tzname": list(time.tzname),
        "calls": CALLS,
        "umask": os.umask(0o022),
        "utf8_mode": sys.flags.utf8_mode,
        "dont_write_bytecode": sys.dont_write_bytecode,
        "ppid": os.getppid(),
        "blocked_signals": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    }


@flyjobs.remote(timeout_s=60)
def exit_hook(path: str) -> None:
    """Register an atexit handler that writes ``path`` when the worker's interpreter exits."""

    def write() -> None:
        with open(path, "w") as file:
            file.write("ran")

    atexit.register(write)


class _Finalized:
    """Writes ``path`` when finalized: at the latest when the interpreter tears down modules."""

    def __init__(self, path: str) -> None:
        self.path = path

    # `open` bound now: module teardown may already have taken the builtins when this runs.
    def __del__(self, open: Any = open) -> None:
        with open(self.path, "w") as file:
            file.write("finalized")


def _print_buffered() -> None:
    # stdout replaced by a block-buffered file: only a flush at exit writes the line.
    sys.stdout = open(1, "w", closefd=False)
    sys.stdout.write("printed at exit")


#: Kept alive until the interpreter's teardown, if it has one.
KEPT: list[object] = []


@flyjobs.remote(timeout_s=60)
def exit_work(folder: str) -> None:
    """Leave work for the worker's exit: a non-daemon thread that writes ``thread`` once the
    main thread has finished (the interpreter's exit waits for it), an atexit handler that
    prints to a buffered stdout, and an object whose finalizer writes ``finalized``."""

    def after_main() -> None:
        threading.main_thread().join()
        with open(os.path.join(folder, "thread"), "w") as file:
            file.write("ran")

    threading.Thread(target=after_main).start()
    atexit.register(_print_buffered)
    KEPT.append(_Finalized(os.path.join(folder, "finalized")))
