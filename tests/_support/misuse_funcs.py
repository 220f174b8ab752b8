"""Remote functions of tests/test_remote_misuse.py: exits and mistakes a user can make."""

from __future__ import annotations

import os

import flyjobs


class Halt(BaseException):
    """A BaseException of the user's own."""


class TwoPartError(Exception):
    """Its __init__ takes two arguments but hands one message to Exception."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@flyjobs.remote(timeout_s=60)
def interrupt() -> None:
    raise KeyboardInterrupt("stopped by the function")


@flyjobs.remote(timeout_s=60)
def halt() -> None:
    raise Halt("halted")


@flyjobs.remote(timeout_s=60)
def exit_quietly() -> None:
    os._exit(0)


@flyjobs.remote(timeout_s=60)
def two_part_error() -> None:
    raise TwoPartError(7, "out of range")


@flyjobs.remote(timeout_s=60)
def add(a: int, b: int) -> int:
    return a + b


@flyjobs.remote(timeout_s=60)
def nested(a: int) -> int:
    """Calls another remote function from a machine."""
    return add.remote(a, 1)


class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    @flyjobs.remote(timeout_s=60)
    def plus(self, n: int) -> int:
        return self.start + n
