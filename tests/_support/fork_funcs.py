"""Remote functions of the fork server tests: what a worker process sees of itself."""

from __future__ import annotations

import atexit
import os
import sys
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
    }


@flyjobs.remote(timeout_s=60)
def exit_hook(path: str) -> None:
    """Register an atexit handler that writes ``path`` when the worker's interpreter exits."""

    def write() -> None:
        with open(path, "w") as file:
            file.write("ran")

    atexit.register(write)
