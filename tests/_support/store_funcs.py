"""Remote functions of the object-store and payload-limit tests; the worker imports this module
by reference."""

from __future__ import annotations

import os
import time

import flyjobs


@flyjobs.remote(timeout_s=60)
def double(x: int) -> int:
    return 2 * x


@flyjobs.remote(timeout_s=60)
def size_of(data: bytes) -> tuple[int, bytes]:
    return len(data), data[-16:]


@flyjobs.remote(timeout_s=60)
def blob(mb: int) -> bytes:
    return bytes(range(256)) * (mb * 4096)


class StoreTestError(Exception):
    """Raised remotely; importable here, so it comes back as itself."""


@flyjobs.remote(timeout_s=60)
def fail(message: str) -> None:
    raise StoreTestError(message)


@flyjobs.remote(timeout_s=60)
def crash(code: int) -> None:
    os._exit(code)


@flyjobs.remote(timeout_s=60)
def slow_square(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x * x


@flyjobs.remote(timeout_s=60)
def square_when(x: int, release: str) -> int:
    """Square `x` once the file `release` exists (the test says when; the timeout bounds it)."""
    while not os.path.exists(release):
        time.sleep(0.02)
    return x * x


@flyjobs.remote(timeout_s=60)
def counted_square(x: int, ledger: str, seconds: float = 0.0) -> int:
    """Append one line to `ledger` per run (the tests count runs), then square `x`."""
    with open(ledger, "a") as f:
        f.write(f"{x}\n")
    time.sleep(seconds)
    return x * x


@flyjobs.remote(timeout_s=120, memory_mb=1024)
def big_result(size: int) -> bytes:
    return b"r" * size


@flyjobs.remote(timeout_s=60)
def crash_at(x: int, code: int) -> int:
    """Return `x`, or end the machine with exit `code` when it is not 0."""
    if code:
        os._exit(code)
    return x


@flyjobs.remote(timeout_s=60)
def pickle_shaped(marker: str) -> dict[int, object]:
    """An authentic plain value whose msgpack bytes happen to be a pickle that creates
    `marker`: ``8c 02`` (a 12-entry map, key 2) is SHORT_BINUNICODE of the 2 bytes ``d9 8x``
    (valid UTF-8: a 128-191 character string follows), then the string runs as opcodes."""
    opcodes = f"cbuiltins\nopen\n(S'{marker}'\nS'w'\ntR."
    assert len(opcodes) <= 160, "the marker's path is too long for the string"
    return {2: opcodes.ljust(140), **{k: k for k in range(3, 14)}}


@flyjobs.remote(timeout_s=60, retries=1)
def crash_once_at(x: int, at: int, ledger: str, marker: str, go: str) -> int:
    """Append `x` to `ledger` (the tests count runs); at input `at`, the first time (no
    `marker` yet), wait until `go` exists (the test has the results before it), then end the
    machine instead of returning."""
    with open(ledger, "a") as f:
        f.write(f"{x}\n")
    if x == at and not os.path.exists(marker):
        for _ in range(6000):  # bounded: a minute
            if os.path.exists(go):
                break
            time.sleep(0.01)
        open(marker, "w").close()
        os._exit(3)
    return x


@flyjobs.remote(timeout_s=60)
def touch(path: str) -> str:
    """Create `path`: a call that must never run in the tests that use it."""
    open(path, "w").close()
    return path
