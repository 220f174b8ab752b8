"""Remote functions of the command-line tests (the worker imports this module by reference)."""

from __future__ import annotations

import time

import flyjobs


@flyjobs.remote(timeout_s=60)
def square(x: int) -> int:
    return x * x


@flyjobs.remote(timeout_s=60)
def print_lines(n: int, tag: str = "line") -> int:
    for i in range(n):
        print(f"{tag} {i:05d} " + "x" * 60)  # noqa: T201 - remote output is what is tested
    return n


@flyjobs.remote(timeout_s=60)
def print_then_wait(path: str) -> str:
    """Print, then wait until ``path`` exists (the test's signal to finish)."""
    import os

    print("started", flush=True)  # noqa: T201 - remote output is what is tested
    while not os.path.exists(path):
        time.sleep(0.02)
    print("finished", flush=True)  # noqa: T201
    return "done"


@flyjobs.remote(timeout_s=60)
def hang(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def plain(word: str) -> str:
    """Not decorated: `flyjobs run` makes it remote with default options."""
    return word.upper()
