"""The map is true: the Layout table of docs/architecture.md names every package and module of
flyjobs, and each private package's docstring says what it owns and what it may import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "flyjobs"
PUBLIC_PACKAGES = ("machines", "emulator")  # they document their own private modules


def _layout() -> dict[str, set[str]]:
    """Each path the Layout table starts a row with, and the module names the row gives."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("\n## Layout\n") :]
    rows: dict[str, set[str]] = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            paths, what = line.strip("| ").split(" | ", 1)
            for path in re.findall(r"`([^`]+)`", paths):
                rows[path] = set(re.findall(r"`(\w+\.py)`", what))
    return rows


def test_every_module_is_in_the_layout_table() -> None:
    rows = _layout()
    listed = {path for path in rows if path.startswith("flyjobs/")}
    assert all((ROOT / path).exists() for path in rows), sorted(
        p for p in rows if not (ROOT / p).exists()
    )
    top = {f"flyjobs/{p.name}" for p in PACKAGE.glob("*.py")}
    packages = {f"flyjobs/{p.parent.name}/" for p in PACKAGE.glob("*/__init__.py")}
    assert top | packages <= listed, sorted((top | packages) - listed)
    for package in packages - {f"flyjobs/{name}/" for name in PUBLIC_PACKAGES}:
        modules = {p.name for p in (ROOT / package).glob("*.py")} - {"__init__.py"}
        assert rows[package] == modules, (package, rows[package] ^ modules)


def test_each_private_package_says_what_it_owns_and_may_import() -> None:
    for init in sorted(PACKAGE.glob("_*/__init__.py")):
        tree = ast.parse(init.read_text())
        doc = ast.get_docstring(tree)
        assert doc and "Owns:" in doc and "May import:" in doc, init
        assert len(tree.body) == 1, (
            f"{init}: a docstring only (importing a module never loads its siblings)"
        )
        modules = {p.stem for p in init.parent.glob("*.py")} - {"__init__"}
        named = set(re.findall(r"`(\w+)`", doc.split("May import:")[0]))
        assert modules <= named, (init, modules - named)


def _imports(path: Path) -> set[str]:
    """The flyjobs modules ``path`` imports, at the top or in a function (not for type checkers)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    origin = ".".join([*base, child.module] if child.module else base)
                else:
                    origin = child.module or ""
                if child.module is None:
                    found.update(f"{origin}.{alias.name}" for alias in child.names)
                else:
                    found.add(origin)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name.startswith("flyjobs.")}


def test_each_private_package_imports_only_what_its_docstring_allows() -> None:
    wrong = []
    for init in sorted(PACKAGE.glob("_*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        rule = doc.split("May import:", 1)[1]
        if "any package of flyjobs" in rule:
            continue
        allowed, _, never = rule.partition("Never")
        may = {name.removeprefix("flyjobs.") for name in re.findall(r"`([\w.]+)`", allowed)}
        must_not = {name.removeprefix("flyjobs.") for name in re.findall(r"`([\w.]+)`", never)}
        for path in sorted(init.parent.glob("*.py")):
            for name in sorted(_imports(path)):
                parts = name.split(".")[1:]  # flyjobs._calls.fleet: _calls, fleet
                prefixes = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
                if parts[0] == init.parent.name:
                    continue
                # The most specific rule wins: "`_calls.fleet`", then "never the rest of `_calls`".
                allowed_by = max(map(len, prefixes & may), default=-1)
                if allowed_by <= max(map(len, prefixes & must_not), default=-1):
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []
