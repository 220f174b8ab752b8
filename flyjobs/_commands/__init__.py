"""The ``flyjobs`` commands around the library: run, ls, logs, gc, doctor, batch, schedule.

Each is a thin face over a library function; `flyjobs.cli` registers them.
"""

from __future__ import annotations

from .batch import batch
from .doctor import doctor
from .listing import logs, ls
from .run import run
from .schedule import schedule
from .strays import gc

__all__ = ("COMMANDS",)

COMMANDS = (run, ls, logs, gc, doctor, batch, schedule)
