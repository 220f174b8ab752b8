"""What type checkers see of a decorated function: the values of its remote calls, for plain
and ``async def`` functions (whose remote call gives the awaited value), and its parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a mypy run: seconds

CHECKED = """
from typing import assert_type

import flyjobs


@flyjobs.remote
async def fetch(x: int) -> str:
    return str(x)


@flyjobs.remote(memory_mb=512)
def square(x: int) -> int:
    return x * x


async def main() -> None:
    assert_type(fetch.remote(1), str)
    assert_type(await fetch.remote.aio(1), str)
    assert_type(fetch.spawn(1).result(), str)
    assert_type(fetch.with_options(timeout_s=5).remote(1), str)
    assert_type(await fetch(1), str)
    assert_type(square.remote(2), int)
    assert_type(square.spawn(2), flyjobs.Call[int])
    assert_type(square.local(2), int)
    fetch.remote("one")
"""


def test_remote_calls_have_the_function_s_value_type(tmp_path: Path) -> None:
    checked = tmp_path / "checked.py"
    checked.write_text(CHECKED)
    cache = tmp_path / "cache"
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), str(checked)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    # Exactly the wrong argument: the assert_type lines hold, and parameters are checked.
    assert len(errors) == 1, run.stdout
    assert 'incompatible type "str"; expected "int"' in errors[0]
    wrong = CHECKED.splitlines().index('    fetch.remote("one")') + 1
    assert errors[0].startswith(f"{checked}:{wrong}:"), run.stdout
