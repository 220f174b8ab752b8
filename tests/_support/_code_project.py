"""A caller's project in a temporary folder for the code-sync tests: two packages and a
helper module, each named with a fresh suffix so that tests never share a module in
sys.modules."""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

_numbers = itertools.count()


@dataclass(frozen=True)
class Project:
    root: Path
    jobs: str  # package with the remote functions: `<jobs>.tasks`
    lib: str  # a second package the functions import
    helper: str  # a module beside them

    @property
    def tasks(self) -> Path:
        return self.root / self.jobs / "tasks.py"

    def forget(self) -> None:
        """Drop the project's modules from sys.modules (its folder stays on the path)."""
        for name in list(sys.modules):
            if name.partition(".")[0] in (self.jobs, self.lib, self.helper):
                del sys.modules[name]


def make_project(folder: Path, *, body: str = "", decorate: str = "@flyjobs.remote") -> Project:
    """Write the project under ``folder``: ``<jobs>/tasks.py`` defines ``add_one(x)``
    (``helper.bump(lib.twice(x)) - x``, which is ``x + 1``) plus ``body``."""
    n = next(_numbers)
    project = Project(root=folder, jobs=f"cjobs{n}", lib=f"clib{n}", helper=f"chelper{n}")
    (folder / "pyproject.toml").write_text("[project]\nname = 'callerproj'\n")
    (folder / project.jobs).mkdir()
    (folder / project.jobs / "__init__.py").write_text("")
    (folder / project.lib).mkdir()
    (folder / project.lib / "__init__.py").write_text("def twice(x):\n    return 2 * x\n")
    (folder / project.lib / "table.csv").write_text("a,b\n1,2\n")
    (folder / f"{project.helper}.py").write_text("def bump(x):\n    return x + 1\n")
    project.tasks.write_text(
        "import flyjobs\n"
        f"import {project.helper}\n"
        f"from {project.lib} import twice\n\n\n"
        f"{decorate}\n"
        "def add_one(x):\n"
        f"    return {project.helper}.bump(twice(x)) - x\n" + body
    )
    return project
