"""What the emulator and its fork server (`flyjobs._machine_side.zygote`) agree on.

Which start-up variables a forked machine must share with its server, how a forked machine is
signalled, and the server's module. The emulator imports this, not the zygote, which preloads
the worker and the declaration layer for its children.
"""

from __future__ import annotations

import contextlib
import os
import re

__all__ = ("STARTUP_ENV", "ZYGOTE_MODULE", "signal_machine", "startup_env")

#: The fork server's module, started as ``python -m``.
ZYGOTE_MODULE = "flyjobs._machine_side.zygote"
#: Variables the interpreter reads while it starts (sys.path, flags, encodings, locale, the
#: user's site folder). A child of a fork server keeps the server's start, so it is used only
#: for machines whose values of these equal the server's. ``TZ`` is not among them: the child
#: calls ``time.tzset()``.
STARTUP_ENV = re.compile(r"PYTHON[A-Z0-9_]*|LC_[A-Z]+|LANG|LANGUAGE|HOME")


def startup_env(env: dict[str, str]) -> dict[str, str]:
    """The variables of ``env`` that shape an interpreter's start-up."""
    return {name: value for name, value in env.items() if STARTUP_ENV.fullmatch(name)}


def signal_machine(pid: int, signum: int) -> None:
    """Send ``signum`` to the process group of the machine whose main process is ``pid``."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        # A child not yet scheduled since its fork has not made its group yet (nor any process
        # of its own): the signal is for the child itself.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    except PermissionError:
        pass
