"""``GET …/ps``: the processes of a machine, in fly-go's ``ProcessStat`` shape."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import psutil

__all__ = ("SORT_KEYS", "process_stats")

#: Fields ``sort_by`` accepts.
SORT_KEYS = frozenset({"pid", "stime", "rtime", "command", "directory", "cpu", "rss"})


def process_stats(group_id: int) -> list[dict[str, Any]]:
    """Every live process of the process group ``group_id`` (a machine's process tree).

    Per process: ``pid``; ``stime`` (start, Unix ms); ``rtime`` (ms running); ``command``;
    ``directory`` (working folder); ``cpu`` (CPU time used, ms); ``rss`` (bytes);
    ``listen_sockets`` (``{proto, address}`` of its listening TCP sockets).
    """
    stats = []
    now_ms = int(time.time() * 1000)
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) != group_id:
                continue
            with process.oneshot():
                started_ms = int(process.create_time() * 1000)
                times = process.cpu_times()
                stats.append(
                    {
                        "pid": process.pid,
                        "stime": started_ms,
                        "rtime": max(0, now_ms - started_ms),
                        "command": " ".join(process.cmdline()),
                        "directory": _cwd(process),
                        "cpu": int((times.user + times.system) * 1000),
                        "rss": process.memory_info().rss,
                        "listen_sockets": _listening(process),
                    }
                )
    return stats


def _cwd(process: psutil.Process) -> str:
    try:
        return process.cwd()
    except psutil.Error:
        return ""


def _listening(process: psutil.Process) -> list[dict[str, str]]:
    try:
        connections = process.net_connections(kind="inet")
    except psutil.Error:  # macOS may refuse to show them
        return []
    return [
        {"proto": "tcp", "address": f"{c.laddr.ip}:{c.laddr.port}"}
        for c in connections
        if c.status == psutil.CONN_LISTEN
    ]
