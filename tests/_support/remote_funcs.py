"""Remote functions the end-to-end tests call; the worker imports this module by reference."""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from typing import Any

import pydantic

import flyjobs


# Classes of values that travel as arguments: a machine imports them from the code the call
# ships (this module), as it would from any module of the caller's project that ships.
@dataclasses.dataclass
class Point:
    x: int
    y: float


class Colour(enum.Enum):
    red = "r"


class Model(pydantic.BaseModel):
    name: str
    tags: list[str]


@flyjobs.remote(timeout_s=60)
def echo(value: Any) -> Any:
    return value


@flyjobs.remote(timeout_s=60)
def add(a: int, b: int = 0, *, scale: int = 1) -> int:
    return (a + b) * scale


@flyjobs.remote(timeout_s=60)
async def async_double(x: int) -> int:
    return 2 * x


@flyjobs.remote(timeout_s=60)
def chatty(n: int) -> int:
    for i in range(n):
        print(f"line {i}")  # noqa: T201 - remote output is what is tested
    return n


class LocalOnlyError(Exception):
    """Raised remotely; importable here too, so it is rebuilt as itself."""


@flyjobs.remote(timeout_s=60)
def fail(message: str) -> None:
    try:
        raise KeyError("inner cause")
    except KeyError as exc:
        raise LocalOnlyError(message) from exc


@flyjobs.remote(timeout_s=60)
def fail_unimportable() -> None:
    cls = type("Ghost", (Exception,), {"__module__": "no_such_module_anywhere"})
    raise cls("boo")


@flyjobs.remote(timeout_s=60, memory_mb=256)
def hog(mb: int) -> int:
    blob = b"x" * (mb * 1024 * 1024)
    time.sleep(5)
    return len(blob)


@flyjobs.remote(timeout_s=60)
def crash(code: int) -> None:
    print("about to crash")  # noqa: T201 - remote output is what is tested
    os._exit(code)


@flyjobs.remote(timeout_s=2)
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flyjobs.remote(timeout_s=60)
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flyjobs.remote(timeout_s=60)
def env_value(name: str) -> str | None:
    return os.environ.get(name)


@flyjobs.remote(timeout_s=60, secrets=["DATABASE_URL"])
def needs_database(name: str) -> str | None:
    return os.environ.get(name)


@flyjobs.remote(timeout_s=60, pickle=True)
def echo_pickled(value: Any) -> Any:
    return value


class Opaque:
    """Not plain data: only pickle carries it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.n == self.n


@flyjobs.remote(timeout_s=60, env={"GREETING": "hi from env"})
def greeting() -> str | None:
    return os.environ.get("GREETING")


@flyjobs.remote(timeout_s=60, retries=1)
def crash_once(marker: str) -> str:
    # The first machine finds no marker, leaves one and crashes; the retry finds it.
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(7)
    return "second time lucky"


@flyjobs.remote(timeout_s=2)
def record_pid_and_hang(pid_file: str) -> None:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)


@flyjobs.remote(timeout_s=60)
def crash_or_sleep(value: int) -> int:
    # Below 10: crash at once; otherwise sleep that long.
    if value < 10:
        os._exit(value)
    time.sleep(value)
    return value


@flyjobs.remote(timeout_s=60)
def record_pid_and_sleep(pid_file: str) -> None:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)


@flyjobs.remote(timeout_s=2)
def quick(x: int) -> int:
    return x


@flyjobs.remote(timeout_s=60)
def pid_unless_marked(marker: str, x: int, crash_on: int) -> tuple[int, int]:
    # The first machine to reach input `crash_on` leaves a marker and crashes mid-input.
    if x == crash_on and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    return x, os.getpid()


@flyjobs.remote(timeout_s=60)
def flaky(folder: str, x: int) -> int:
    # Raises the first time it sees `x`, returns it after.
    marker = os.path.join(folder, str(x))
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError(f"flaky {x}")
    return x


@flyjobs.remote(timeout_s=60)
def fail_or_sleep(seconds: float) -> float:
    # Negative: fail at once; otherwise sleep that long.
    if seconds < 0:
        raise ValueError(f"failed on {seconds}")
    time.sleep(seconds)
    return seconds


@flyjobs.remote(timeout_s=60)
def megabyte_after(release: str, index: int) -> bytes:
    """A MiB; input 0 only once the file ``release`` exists."""
    while index == 0 and not os.path.exists(release):
        time.sleep(0.02)
    return b"x" * 2**20


@flyjobs.remote(timeout_s=60)
def unencodable_result() -> object:
    return object()  # the worker cannot encode it: its own SerializationError comes back


@flyjobs.remote(timeout_s=60)
def mark_or_wait(folder: str, x: int, slow: int, total: int) -> tuple[int, int]:
    """Input ``slow`` waits until every other input has left its mark in ``folder`` (30 s at
    most) and returns how many it saw; the others leave their mark. With the machine's pid."""
    if x != slow:
        open(os.path.join(folder, str(x)), "w").close()
        return x, os.getpid()
    end = time.monotonic() + 30
    while len(os.listdir(folder)) < total - 1 and time.monotonic() < end:
        time.sleep(0.01)
    return len(os.listdir(folder)), os.getpid()


@flyjobs.remote(timeout_s=60)
def crash_on(x: int, bad: int) -> int:
    """Input ``bad`` ends its machine mid-input, every time."""
    if x == bad:
        os._exit(9)
    return x


@flyjobs.remote(timeout_s=60)
def ledger_fail_while(x: int, ledger: str, flag: str) -> int:
    """Note the run in ``ledger``; while the file ``flag`` exists, inputs with x % 40 == 3
    raise."""
    with open(ledger, "a") as f:
        f.write(f"{x}\n")
    if x % 40 == 3 and os.path.exists(flag):
        raise ValueError(f"input {x} fails while {flag} exists")
    return x


@flyjobs.remote(timeout_s=60)
def slow_from(x: int, first_slow: int, seconds: float) -> int:
    """Returns ``x`` at once, or after ``seconds`` from input ``first_slow`` on."""
    if x >= first_slow:
        time.sleep(seconds)
    return x


@flyjobs.remote(timeout_s=60)
def crash_or_mark_after(value: int, folder: str) -> int:
    """Below 10: crash at once; otherwise sleep ``value`` seconds, then leave a mark in
    ``folder`` (a mark says the function ran to its end)."""
    if value < 10:
        os._exit(value)
    time.sleep(value)
    with open(os.path.join(folder, f"{os.getpid()}.done"), "w"):
        pass
    return value
