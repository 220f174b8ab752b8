"""Runs a machine's several ``config.processes`` as one process tree (standard library only).

Started by path, not as a module, so that it pays no package import. Argument: a JSON file
holding ``[{"argv": [...], "env": {...}}, ...]``. The machine stops when any process exits, as
on Fly: this exits with that process's status and the emulator then kills the rest of the
group. Signals reach every process directly, because the emulator signals the whole group.
"""

import json
import os
import signal
import subprocess
import sys


def main() -> int:
    """Spawn every process, then return the exit status of the first one to end."""
    with open(sys.argv[1], encoding="utf-8") as spec_file:
        specs = json.load(spec_file)
    # A Python handler (unlike SIG_IGN) is reset on exec, so the children keep default
    # dispositions while this supervisor survives the group-wide stop signal.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda _signum, _frame: None)
    children = [subprocess.Popen(spec["argv"], env=spec["env"]) for spec in specs]
    by_pid = {child.pid: child for child in children}
    while True:
        pid, status = os.wait()
        if pid in by_pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
