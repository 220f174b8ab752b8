"""The curated public API: every exported name resolves, is documented, names `flyjobs` as its
module, and the package stays light."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import remote_funcs as funcs

import flyjobs
from flyjobs._calls.runtime import Runtime
from flyjobs._wire.remote_errors import describe_exception, rebuild_exception

ROOT = Path(__file__).parent.parent
# The Public API table lives on the docs site's API reference page.
API_PAGE = ROOT / "docs" / "reference" / "api.md"
# Every page a reader sees: the README and the docs site.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


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


def _api_page_section(title: str) -> str:
    text = API_PAGE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_all_is_what_the_docs_document() -> None:
    # The first column of the API page's "Public API" table lists every public name.
    rows = [line for line in _api_page_section("Public API").splitlines() if line.startswith("| `")]
    documented = [name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert sorted(documented) == sorted(flyjobs.__all__)
    # Every `flyjobs.X` the README or a docs page names anywhere is public, or a module.
    text = "\n".join(page.read_text() for page in PAGES)
    for name in set(re.findall(r"\bflyjobs\.(\w+)", text)):
        assert name in flyjobs.__all__ or _is_module(name), name


def _is_module(name: str) -> bool:
    """A module or package of flyjobs (the architecture and reference pages name them)."""
    package = ROOT / "flyjobs"
    return (package / f"{name}.py").exists() or (package / name / "__init__.py").exists()


def test_public_classes_report_flyjobs_as_their_module() -> None:
    classes = [getattr(flyjobs, n) for n in flyjobs.__all__ if n not in ("remote", "__version__")]
    assert all(isinstance(c, type) for c in classes)
    assert {c.__qualname__: c.__module__ for c in classes} == {
        c.__qualname__: "flyjobs" for c in classes
    }
    assert repr(flyjobs.CallStatus.queued) == "<CallStatus.queued: 'queued'>"
    assert str(flyjobs.Call[int]) == "flyjobs.Call[int]"


def test_a_flyjobs_error_travels_by_its_public_name() -> None:
    # `flyjobs` is imported wherever a result is read: the class resolves through
    # `flyjobs.__getattr__`, and no module has to be trusted for it.
    def refuse(module: str) -> bool:
        raise AssertionError(f"asked to import {module}")

    info = describe_exception(flyjobs.SerializationError("bad"), stage="result")
    assert (info.module, info.type) == ("flyjobs", "flyjobs.SerializationError")
    rebuilt = rebuild_exception(info, pickle=False, may_import=refuse)
    assert type(rebuilt) is flyjobs.SerializationError and str(rebuilt) == "bad"


def test_a_flyjobs_error_raised_on_a_machine_is_raised_as_its_class(runtime: Runtime) -> None:
    with pytest.raises(flyjobs.SerializationError, match="result") as caught:
        funcs.unencodable_result.remote()
    assert type(caught.value) is flyjobs.SerializationError
    assert "Remote traceback" in "".join(getattr(caught.value, "__notes__", []))
