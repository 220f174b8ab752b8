"""A script that used the embedded emulator ends without a word on stderr.

Python 3.12 refuses to start a thread once the interpreter is exiting, which is when the
runtime's ``atexit`` handler stops the runtime's loop and the embedded emulator's. asyncio's
own loop closing starts one (to join the default executor), so every script ended with a
traceback there. The script below refuses thread starts from that moment on any Python
version, and CI runs ``examples/hello.py`` on a 3.12 too (``.ci/run``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys, threading, time
import flyjobs


@flyjobs.remote(memory_mb=256, timeout_s=60)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def refuse_threads() -> None:
    # Python 3.12's rule during interpreter exit, on any version: no thread starts now.
    def start(thread: threading.Thread) -> None:
        print(f"thread {thread.name!r} started at interpreter exit", file=sys.stderr)
        raise RuntimeError("can't create new thread at interpreter shutdown")

    threading.Thread.start = start


if __name__ == "__main__":
    # Long enough for the emulator to check the machine's memory (in a worker thread).
    print(nap.remote(0.3))
    # Registered after flyjobs' own handler, so it runs before it.
    atexit.register(refuse_threads)
"""


def test_a_script_on_the_embedded_emulator_exits_with_an_empty_stderr(tmp_path: Path) -> None:
    script = tmp_path / "nap.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        timeout=120,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "0.3\n", "")
