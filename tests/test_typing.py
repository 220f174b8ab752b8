"""What type checkers (mypy, and pyright as VS Code's Pylance runs it) see of a decorated
function: the values of its remote calls and maps, for plain and ``async def`` functions (whose
remote call gives the awaited value), and its parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a mypy and a pyright run: seconds each

CHECKED = """
from collections.abc import AsyncGenerator, Iterator
from typing import assert_type

import flyjobs


@flyjobs.remote
async def fetch(x: int) -> str:
    return str(x)


@flyjobs.remote(memory_mb=512)
def square(x: int) -> int:
    return x * x


@flyjobs.remote
def scale(x: int, factor: float = 2.0) -> float:
    return x * factor


async def main() -> None:
    assert_type(fetch.remote(1), str)
    assert_type(await fetch.remote.aio(1), str)
    assert_type(fetch.spawn(1).result(), str)
    assert_type(fetch.with_options(timeout_s=5).remote(1), str)
    assert_type(await fetch(1), str)
    assert_type(square.remote(2), int)
    assert_type(await square.remote.aio(2), int)
    assert_type(square.spawn(2), flyjobs.Call[int])
    assert_type(square.spawn(2).result(), int)
    assert_type(square.local(2), int)
    assert_type(square.map([1, 2]), flyjobs.MapResults[int])
    assert_type(next(square.map([1, 2])), int)
    assert_type(next(fetch.map(range(3))), str)
    assert_type(next(scale.map([1], [0.5])), float)
    assert_type(next(scale.starmap([(1, 0.5)])), float)
    assert_type(next(square.map([1], return_exceptions=True)), int | Exception)
    assert_type(square.map([1]).outcomes(), Iterator[flyjobs.Outcome[int]])
    assert_type(next(fetch.map([1]).outcomes()).value, str | Exception)
    assert_type(fetch.map.aio([1]), AsyncGenerator[str, None])
    async for value in square.map.aio([1]):
        assert_type(value, int)
    fetch.remote("one")
    square.map(["a"])
"""

#: The two lines of CHECKED each checker must report (and nothing else).
WRONG = ('    fetch.remote("one")', '    square.map(["a"])')


def _line(text: str) -> int:
    return CHECKED.splitlines().index(text) + 1


@pytest.fixture
def checked(tmp_path: Path) -> Path:
    path = tmp_path / "checked.py"
    path.write_text(CHECKED)
    return path


def test_mypy_sees_the_function_s_types(checked: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), str(checked)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    # Exactly the wrong arguments: the assert_type lines hold, and parameters are checked.
    assert [int(line.split(":")[1]) for line in errors] == [_line(w) for w in WRONG], run.stdout
    assert 'incompatible type "str"; expected "int"' in errors[0]
    assert '"str"; expected "int"' in errors[1]


def test_pyright_sees_the_function_s_types(checked: Path, tmp_path: Path) -> None:
    # The pyright wheel bundles pyright itself, and its `nodejs` extra a Node.js (see the dev
    # extra): nothing is downloaded here. --outputjson also skips its check for a newer release.
    env = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1", "HOME": str(tmp_path)}
    env.pop("PYRIGHT_PYTHON_FORCE_VERSION", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyright",
            "--outputjson",
            "--pythonpath",
            sys.executable,
            str(checked),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    report = json.loads(run.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    lines = [d["range"]["start"]["line"] + 1 for d in errors]
    # Exactly the wrong arguments: no coroutine where an `async def`'s value is, and the
    # parameters of `.remote` and `.map` are checked.
    assert lines == [_line(w) for w in WRONG], json.dumps(errors, indent=1)
    assert all(d["rule"] == "reportArgumentType" for d in errors), errors
