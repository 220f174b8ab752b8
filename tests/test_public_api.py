"""The curated public API: every exported name resolves, and the package stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import flyjobs


def test_all_is_sorted_and_resolves() -> None:
    names = [n for n in flyjobs.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in flyjobs.__all__:
        assert getattr(flyjobs, name) is not None


def test_unknown_attribute_raises() -> None:
    try:
        flyjobs.no_such_name  # type: ignore[attr-defined]  # noqa: B018 - mypy rejects it too
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_exceptions_share_one_root() -> None:
    for name in flyjobs.__all__:
        value = getattr(flyjobs, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, flyjobs.FlyjobsError), name


def test_importing_flyjobs_and_decorating_stays_light() -> None:
    # The worker imports flyjobs, and the user's module decorates with it, on every machine:
    # neither may pull in the client's stack.
    code = (
        "import sys, flyjobs\n"
        "@flyjobs.remote(memory_mb=512)\n"
        "def f(x): return x\n"
        "heavy = ('httpx', 'pydantic', 'anyio', 'starlette', 'uvicorn', 'typing_extensions')\n"
        "heavy = sorted(m for m in heavy"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


def test_type_checkers_see_exactly_the_lazy_names() -> None:
    # The TYPE_CHECKING block is what mypy and IDEs see, the lazy table what runs: one name
    # missing from the block is a public name type checkers reject.
    tree = ast.parse(Path(flyjobs.__file__).read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
        if node.test.id == "TYPE_CHECKING"
    )
    seen: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name} must be re-exported as itself"
            seen[alias.name] = "." * node.level + (node.module or "")
    assert seen == flyjobs._WHERE
