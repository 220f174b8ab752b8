"""Functions and types the worker tests run in real worker processes.

The worker imports this module by reference (``worker_funcs:square``), with this directory in
the call's ``sys_path``; the tests import it the same way, so classes match on both sides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import re
import socket
import sys
import time
from typing import Any, NamedTuple


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class Box:
    items: list[Any]
    label: str = "box"
    size: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.size = len(self.items)


class Pair(NamedTuple):
    left: Any
    right: Any


class BoomError(Exception):
    """Importable here and in the worker, so it is rebuilt as itself."""


class CodedError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def square(x: int) -> int:
    return x * x


def echo(*args: Any, **kwargs: Any) -> Any:
    return {"args": args, "kwargs": kwargs}


def chatty(n: int) -> int:
    for i in range(n):
        print(f"line {i}")  # noqa: T201
    print("to stderr", file=sys.stderr)  # noqa: T201
    return n


def boom(message: str) -> None:
    try:
        raise KeyError("inner cause")
    except KeyError as exc:
        raise BoomError(message) from exc


def coded(code: int) -> None:
    raise CodedError(code, "detail text")


def unimportable_error() -> None:
    cls = type("Ghost", (Exception,), {"__module__": "no_such_module_anywhere"})
    raise cls("boo")


def exits(code: int) -> None:
    sys.exit(code)


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def blob(size: int) -> bytes:
    return b"x" * size


def wait_for(path: str) -> str:
    """Return once `path` exists (at most 30 s: a stuck test ends)."""
    end = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.01)
    return "seen" if os.path.exists(path) else "never"


def busy(seconds: float) -> int:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def stuck_in_c() -> bool:
    # Catastrophic backtracking: the regex engine holds the GIL for hours.
    return re.match(r"(a+)+$", "a" * 64 + "b") is not None


async def async_double(x: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * x


async def async_boom(message: str) -> None:
    await asyncio.sleep(0)
    raise BoomError(message)


def unserializable_result() -> Any:
    return {"ok": [1, 2, socket.socket()]}


def move(point: Point, dx: int) -> Point:
    return dataclasses.replace(point, x=point.x + dx)


def _arrive(folder: str, word: str, party: int) -> bool:
    """Mark ``word`` arrived in ``folder``; whether ``party`` calls have arrived yet."""
    open(f"{folder}/{word}", "w").close()  # touch
    return len(os.listdir(folder)) >= party


def talk_and_meet(folder: str, word: str, party: int) -> str:
    """Print ``word``, wait (up to 20 s, else raise) until ``party`` calls have arrived in
    ``folder``, print it again: calls that can only end together, each with its own output."""
    print(word)  # noqa: T201
    limit = time.monotonic() + 20
    while not _arrive(folder, word, party):
        if time.monotonic() > limit:
            raise TimeoutError(f"{word}: the other calls never came")
        time.sleep(0.01)
    print(word)  # noqa: T201
    return word


async def async_talk_and_meet(folder: str, word: str, party: int) -> tuple[str, int]:
    """`talk_and_meet` for async code; also the id of the event loop it ran on."""
    print(word)  # noqa: T201
    limit = time.monotonic() + 20
    while not _arrive(folder, word, party):
        if time.monotonic() > limit:
            raise TimeoutError(f"{word}: the other calls never came")
        await asyncio.sleep(0.01)
    print(word)  # noqa: T201
    return word, id(asyncio.get_running_loop())
