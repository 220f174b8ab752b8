"""Keep the logs of flyjobs' own servers and HTTP client out of the host program's log.

The embedded emulator once served through uvicorn, and the runtime speaks to the Machines API
through httpx, on threads of their own; both libraries log through the loggers the host
application shares (``uvicorn.error``, ``uvicorn.access``, ``httpx``). Under
``logging.basicConfig(level=INFO)`` a web app served by uvicorn then showed a second ``Started
server process`` and one ``HTTP Request:`` line per API request flyjobs made (its waits and log
polls included).

A thread flyjobs runs calls `quiet_this_thread` first: the filter put on those loggers drops
their records below WARNING made in that thread (warnings and errors still show). Setting
``FLYJOBS_EMULATOR_LOG=1`` keeps them all, and turns on the emulator's own start line and
access log (one line per request, ``flyjobs.emulator.access``). ``flyjobs dev`` serves on the
main thread, so its logs are kept.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ("EMULATOR_LOG_ENV", "logs_asked", "quiet_this_thread")

#: Set (to anything but ``0`` or empty) to keep the embedded emulator's and the client's logs.
EMULATOR_LOG_ENV = "FLYJOBS_EMULATOR_LOG"
#: The third-party loggers flyjobs' threads log through.
_LOGGERS = ("uvicorn.error", "uvicorn.access", "httpx")

# Per thread, not a context variable: the runtime's loop runs tasks in the contexts of the
# threads that submitted them (anyio's portal copies them), which are the host program's.
_thread = threading.local()
_installed = False
_install_lock = threading.Lock()


class _QuietFilter(logging.Filter):
    """Drops records below WARNING made where `quiet_this_thread` was called."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not getattr(_thread, "quiet", False)


def logs_asked() -> bool:
    """Whether ``FLYJOBS_EMULATOR_LOG`` asks for the emulator's and the client's logs."""
    return os.environ.get(EMULATOR_LOG_ENV, "") not in ("", "0")


def quiet_this_thread() -> None:
    """Quiet the third-party loggers' chatter (below WARNING) in the calling thread, a
    thread of flyjobs' own, unless ``FLYJOBS_EMULATOR_LOG`` asks for it."""
    global _installed
    if logs_asked():
        return
    _thread.quiet = True
    with _install_lock:
        if not _installed:
            for name in _LOGGERS:
                logging.getLogger(name).addFilter(_QuietFilter())
            _installed = True
