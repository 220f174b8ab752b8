"""Which of the caller's files a function needs on a machine.

The function's top-level package (or module), and every top-level package or module of the
project that its shipped modules import (followed with `ast`, imports inside functions too),
found within the project root: the nearest folder at or above the function's module holding
``pyproject.toml`` or ``.git``, else the module's import root. Never the standard library,
installed distributions (site-packages), flyjobs itself (the image's runs the machine), ``.git``,
virtual environments, ``__pycache__``, nor what the root's ``.gitignore`` and
``.flyjobsignore`` exclude. A shipped package's other files (data) come along.
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pathspec

__all__ = ("IGNORE_FILE", "Collected", "Source", "collect", "collect_source", "project_root")

#: The file, in the project root, whose gitignore-style patterns keep files out of bundles.
IGNORE_FILE = ".flyjobsignore"
#: Folders never shipped, whatever the ignore files say.
_NEVER_DIRS = frozenset({".git", "__pycache__", ".hg", ".svn", ".mypy_cache", ".ruff_cache"})
#: Top-level names never shipped: the image's flyjobs runs the machine.
_NEVER_NAMES = frozenset({"flyjobs", "__main__", "__future__"})
#: Path components that mean an installed distribution.
_INSTALLED = frozenset({"site-packages", "dist-packages"})


@dataclass(frozen=True)
class Source:
    """One file that ships: its name in the bundle (``pkg/mod.py``) and its path here."""

    name: str
    path: str
    size: int
    #: the file's bytes, for a module made here rather than read from a file (a notebook's
    #: function, `flyjobs._code.main_source`)
    content: bytes | None = None


@dataclass(frozen=True)
class Collected:
    """What `collect` found: the files that ship (sorted by name), and every path whose
    ``(mtime_ns, size)`` decides them (files, the folders walked, the ignore files: a change
    to any of them may change the bundle)."""

    root: Path
    sources: tuple[Source, ...]
    watched: tuple[tuple[str, tuple[int, int] | None], ...]
    #: the installed distributions the shipped modules import: (top-level module,
    #: distribution, its version here), for the machine to name drift from its image
    requires: tuple[tuple[str, str, str], ...] = ()


def stamp(path: str) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of ``path``, or None if it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def project_root(module_file: str, import_root: str) -> Path:
    """The nearest folder at or above ``module_file`` that holds ``pyproject.toml`` or
    ``.git``, else ``import_root``."""
    folder = Path(module_file).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / "pyproject.toml").is_file() or (candidate / ".git").exists():
            return candidate
    return Path(import_root).resolve()


def _ignore_spec(root: Path) -> pathspec.GitIgnoreSpec:
    lines: list[str] = []
    for name in (".gitignore", IGNORE_FILE):
        try:
            lines += (root / name).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _installed_prefixes() -> tuple[str, ...]:
    """Folders of the standard library and of installed distributions."""
    import sysconfig  # lazy: only a bundle's build needs it

    prefixes = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            prefixes.add(os.path.realpath(path) + os.sep)
    return tuple(prefixes)


class _Walk:
    """One collection: the units (top-level packages or modules) found so far."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_text = str(root) + os.sep
        self.spec = _ignore_spec(root)
        self.installed = _installed_prefixes()
        self.sources: dict[str, Source] = {}
        self.watched: dict[str, tuple[int, int] | None] = {}
        self.seen: set[str] = set(_NEVER_NAMES)
        self.pending: list[str] = []  # .py files whose imports are still to follow
        self.external: set[str] = set()  # imported top-level names that are installed
        for name in (".gitignore", IGNORE_FILE):
            path = str(root / name)
            self.watched[path] = stamp(path)

    def local(self, path: str) -> bool:
        """Whether ``path`` (resolved) is the project's own: inside the root, not installed,
        not in a virtual environment, not ignored."""
        if not path.startswith(self.root_text) or path.startswith(self.installed):
            return False
        relative = path[len(self.root_text) :]
        parts = relative.split(os.sep)
        if _INSTALLED.intersection(parts) or _NEVER_DIRS.intersection(parts):
            return False
        return not self.spec.match_file(relative.replace(os.sep, "/"))

    def add_unit(self, name: str, location: str, is_package: bool) -> None:
        """Ship the top-level ``name`` found at ``location`` (its folder, or its file)."""
        self.seen.add(name)
        import_root = os.path.dirname(location)
        if not is_package:
            self._add_file(location, import_root)
            return
        for folder, dirs, files in os.walk(location):
            self.watched[folder] = stamp(folder)
            dirs[:] = sorted(
                d
                for d in dirs
                if d not in _NEVER_DIRS
                and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
                and self.local(os.path.join(folder, d))
            )
            for file in files:
                if not file.endswith((".pyc", ".pyo")):
                    path = os.path.join(folder, file)
                    if self.local(path):
                        self._add_file(path, import_root)

    def _add_file(self, path: str, import_root: str) -> None:
        info = stamp(path)
        if info is None:
            return
        name = os.path.relpath(path, import_root).replace(os.sep, "/")
        self.watched[path] = info
        self.sources.setdefault(name, Source(name=name, path=path, size=info[1]))
        if path.endswith(".py"):
            self.pending.append(path)

    def follow(self) -> None:
        """Ship the project's own top-level modules the shipped ones import, transitively."""
        while self.pending:
            for name in _imported_names(self.pending.pop()):
                if name not in self.seen:
                    self.seen.add(name)
                    self._resolve(name)

    def resolve(self, name: str) -> None:
        """Ship the top-level ``name`` if it is the project's own; else note it installed."""
        self._resolve(name)

    def _resolve(self, name: str) -> None:
        if name in sys.stdlib_module_names or name in sys.builtin_module_names:
            return
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) if module is not None else None
        locations = list(getattr(module, "__path__", None) or []) if module is not None else []
        if module is None:
            spec = importlib.machinery.PathFinder.find_spec(name)
            if spec is None:
                return
            origin = spec.origin if spec.has_location else None
            locations = list(spec.submodule_search_locations or [])
        shipped = False
        if locations:
            for location in locations:
                folder = os.path.realpath(location)
                if self.local(folder):
                    self.add_unit(name, folder, is_package=True)
                    shipped = True
        elif origin:
            path = os.path.realpath(origin)
            if self.local(path) and path.endswith(".py"):
                self.add_unit(name, path, is_package=False)
                shipped = True
        if not shipped:
            self.external.add(name)


def _imported_names(path: str) -> set[str]:
    """The top-level names a Python file imports (absolute imports, anywhere in it)."""
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError:
        return set()
    return _names_in(source, path)


def _names_in(source: bytes, path: str) -> set[str]:
    """The top-level names Python ``source`` imports (absolute imports, anywhere in it)."""
    if b"import" not in source:
        return set()
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return set()  # the machine's import says what is wrong with it
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.partition(".")[0])
    return names


def collect(module_name: str, module_file: str) -> Collected | None:
    """The files a function of module ``module_name`` (loaded from ``module_file``) needs.

    None when the module is not the project's own (an installed distribution's, the standard
    library's): the image has it, nothing ships.
    """
    path = os.path.realpath(module_file)
    is_package = os.path.basename(path) == "__init__.py"
    packaged = "." in module_name or is_package
    location = path  # the top-level package's folder, or the module's file
    for _ in range(module_name.count(".") + is_package):
        location = os.path.dirname(location)
    import_root = os.path.dirname(location)
    root = project_root(path, import_root)
    walk = _Walk(root)
    if not walk.local(path):
        return None
    walk.add_unit(module_name.partition(".")[0], location, is_package=packaged)
    walk.follow()
    sources = tuple(sorted(walk.sources.values(), key=lambda source: source.name))
    return Collected(
        root=root,
        sources=sources,
        watched=tuple(walk.watched.items()),
        requires=_distributions(sorted(walk.external)),
    )


def collect_source(module_name: str, source: str, folder: str) -> Collected:
    """What a module made here (``module_name``, ``source``: a notebook's function) needs: the
    module itself and the project's own modules it imports, the project being the one of
    ``folder`` (the working directory)."""
    root = project_root(os.path.join(folder, "__main__.py"), folder)
    walk = _Walk(root)
    data = source.encode()
    name = f"{module_name}.py"
    walk.sources[name] = Source(name=name, path="", size=len(data), content=data)
    walk.seen.add(module_name)
    for imported in sorted(_names_in(data, name)):
        if imported not in walk.seen:
            walk.seen.add(imported)
            walk.resolve(imported)
    walk.follow()
    return Collected(
        root=root,
        sources=tuple(sorted(walk.sources.values(), key=lambda source: source.name)),
        watched=tuple(walk.watched.items()),
        requires=_distributions(sorted(walk.external)),
    )


def _distributions(modules: list[str]) -> tuple[tuple[str, str, str], ...]:
    """(module, distribution, version here) of each installed top-level module that belongs
    to a distribution."""
    import importlib.metadata  # lazy: only a bundle's build needs it

    found: list[tuple[str, str, str]] = []
    by_module: Mapping[str, list[str]] | None = None
    for module in modules:
        try:
            found.append((module, module, importlib.metadata.version(module)))
            continue
        except importlib.metadata.PackageNotFoundError:
            pass
        if by_module is None:
            # Slower (it reads every distribution's file list): only for a module whose
            # distribution is named otherwise (yaml: PyYAML).
            by_module = importlib.metadata.packages_distributions()
        for dist in by_module.get(module, [])[:1]:
            try:
                found.append((module, dist, importlib.metadata.version(dist)))
            except importlib.metadata.PackageNotFoundError:
                continue
    return tuple(found)
