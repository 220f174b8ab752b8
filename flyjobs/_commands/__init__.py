"""The ``flyjobs`` commands around the library: run, ls, logs, gc, doctor, batch, schedule.

Each is a thin face over a library function; `flyjobs.cli` registers them.
"""

from __future__ import annotations

from ._batch import batch
from ._doctor import doctor
from ._gc import gc
from ._inspect import logs, ls
from ._run import run
from ._schedule import schedule

__all__ = ("COMMANDS",)

COMMANDS = (run, ls, logs, gc, doctor, batch, schedule)
