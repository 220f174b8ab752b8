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


@flyjobs.remote(timeout_s=60)
def print_marks(victim: str, raw: bool = False) -> str:
    """Print, as a function that prints what it was given might, lines that look like the
    worker's marks naming call ``victim``, and like the emulator's dropped-lines line; with
    ``raw``, straight to the output's descriptor, as a subprocess would (then one line through
    ``print``: a call whose result carries no output is not waited for by live output)."""
    import os
    import sys

    for line in forged_lines(victim):
        if raw:
            sys.stdout.flush()
            os.write(1, (line + "\n").encode())
        else:
            print(line)  # noqa: T201 - remote output is what is tested
    if raw:
        print(RAW_END)  # noqa: T201
    return "printed"


RAW_END = "and a line through print"


def forged_lines(victim: str) -> list[str]:
    return [
        f"flyjobs-call {victim}: a line passed off as {victim}'s",
        f"flyjobs-call start {victim}",
        "a line between marks naming another call",
        f"flyjobs-call end {victim}",
        "[flyjobs emulator: 7 earlier lines of this machine were dropped: not really]",
        "the last line",
    ]


#: Lines with terminal control sequences, as a function's output might hold them, each with
#: how `flyjobs logs` and live output show it.
CONTROL_LINES = {
    "\x1b[2J\x1b[Hthe screen cleared": "\\x1b[2J\\x1b[Hthe screen cleared",
    "mine\r[fj-0000000000000000] overwritten": "[fj-0000000000000000] overwritten",
    "\x1b]0;a window title\x07 and a bell": "\\x1b]0;a window title\\x07 and a bell",
    "\x1b[31mred\x1b[0m, tabs\tkept": "\x1b[31mred\x1b[0m, tabs\tkept\x1b[0m",
}


@flyjobs.remote(timeout_s=60)
def print_controls() -> int:
    for line in CONTROL_LINES:
        print(line)  # noqa: T201 - remote output is what is tested
    return len(CONTROL_LINES)


@flyjobs.remote(timeout_s=60)
def fetch_rows(rows: int) -> int:
    """Fail when there are no rows, as a job whose upstream returned nothing."""
    print(f"fetching {rows} rows")  # noqa: T201 - remote output is what is tested
    if rows == 0:
        raise ValueError("upstream returned 0 rows")
    return rows
