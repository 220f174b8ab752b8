"""Every example a reader sees runs: the Python and shell code blocks of README.md and
docs/**/*.md, so a renamed option breaks a test, not a reader.

A Python block runs as a script (``python example.py``, or ``pytest`` when its first line names a
``# test_*.py`` file) in a temporary project of its own, on the embedded emulator: no Fly
variable reaches it. When the block is followed by ``prints`` and a ``text`` block, its output
must be that. A shell block runs when each of its commands is a ``flyjobs`` command, in Fly mode
against a fresh emulator served by this test (an app, its result key, an image name: what a reader
sets for Fly), from a temporary project holding the page's last Python block as ``jobs.py`` and
the repository's ``examples/``. A block that cannot run here (it needs Fly, a
bucket, a server left running, or is a fragment of your own code) says so in an HTML comment
right before it: ``<!-- no-test: why -->``; any other block fails this test until it runs or is
marked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from flyjobs.emulator import RunningEmulator

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN_LANGUAGES = {"python", "sh", "bash", "shell"}
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\w*)\s*$")
NO_TEST = re.compile(r"^\s*<!-- no-test: (?P<why>\S.*?) -->\s*$")
# What would make a block run on Fly, or on another API, instead of the embedded emulator.
FLY_ENV = ("FLY_API_TOKEN", "FLY_API_HOSTNAME", "FLY_APP", "FLYJOBS_IMAGE", "FLYJOBS_RESULT_KEY")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    skip: str | None  # the reason given in a no-test comment
    prints: str | None  # the output the page shows for it
    jobs: str | None  # the page's last Python block before it (a shell block's jobs.py)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _fences(lines: list[str]) -> list[tuple[int, int, str]]:
    """(opening line index, closing line index, language) of each fenced block."""
    found, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while lines[end].strip() != "```":
            end += 1
        found.append((index, end, opening["lang"]))
        index = end + 1
    return found


def _blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    fences = _fences(lines)
    blocks: list[Block] = []
    jobs = None
    for number, (start, end, lang) in enumerate(fences):
        if lang not in RUN_LANGUAGES:
            continue
        indent = len(lines[start]) - len(lines[start].lstrip())
        code = "\n".join(line[indent:] for line in lines[start + 1 : end]) + "\n"
        mark = NO_TEST.match(lines[start - 1]) if start else None
        prints = None
        following = fences[number + 1] if number + 1 < len(fences) else None
        between = [line.strip() for line in lines[end + 1 : following[0]]] if following else []
        if following and following[2] == "text" and [s for s in between if s] == ["prints"]:
            prints = "\n".join(lines[following[0] + 1 : following[1]]) + "\n"
        why = mark["why"] if mark else None
        blocks.append(Block(page, start + 1, lang, code, why, prints, jobs))
        if lang == "python":
            jobs = code
    return blocks


BLOCKS = [block for page in PAGES for block in _blocks(page)]


def _environment(**fly: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in FLY_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env | fly


def _run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = env if env is not None else _environment()
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def _fly_mode(emulator: RunningEmulator) -> dict[str, str]:
    """The environment of a reader set up for Fly, pointed at ``emulator``."""
    app, key = "docs-examples", "docs-result-key-0123456789abcdef"
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.url, headers=headers) as http:
        http.post("/v1/apps", json={"app_name": app, "org_slug": "personal"}).raise_for_status()
        secret = {"value": key}
        http.post(f"/v1/apps/{app}/secrets/FLYJOBS_RESULT_KEY", json=secret).raise_for_status()
    return _environment(
        FLY_API_TOKEN=emulator.token,
        FLY_API_HOSTNAME=emulator.url,
        FLY_APP=app,
        FLYJOBS_IMAGE=f"registry.fly.io/{app}:latest",
        FLYJOBS_INBOX_HOST="127.0.0.1",
        FLYJOBS_RESULT_KEY=key,
    )


def _run_python(block: Block, project: Path) -> subprocess.CompletedProcess[str]:
    # A project of its own: code sync ships what this folder holds, not the repository.
    (project / "pyproject.toml").write_text('[project]\nname = "docs-example"\nversion = "0"\n')
    first = block.code.splitlines()[0]
    named = re.fullmatch(r"# (test_\w+\.py)", first)
    script = project / (named[1] if named else "example.py")
    script.write_text(block.code)
    if named:
        return _run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name], project
        )
    return _run([sys.executable, script.name], project)


def _run_shell(
    block: Block, project: Path, emulator: RunningEmulator
) -> subprocess.CompletedProcess[str]:
    commands = [
        line for line in block.code.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert commands, f"{block.id}: an empty shell block"
    for command in commands:
        assert command.startswith("flyjobs "), (
            f"{block.id}: only `flyjobs ...` commands run here; mark the block "
            "<!-- no-test: why --> if it cannot run on the embedded emulator"
        )
    script = "set -e\n" + "\n".join(commands) + "\n"
    (project / "pyproject.toml").write_text('[project]\nname = "docs-example"\nversion = "0"\n')
    (project / "examples").symlink_to(ROOT / "examples")
    if block.jobs is not None:
        (project / "jobs.py").write_text(block.jobs)
    env = _fly_mode(emulator)
    # The `flyjobs` of the interpreter running the tests comes first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return _run(["bash", "-c", script], project, env)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_example_runs(
    block: Block, tmp_path: Path, make_emulator: Callable[..., RunningEmulator]
) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    if block.lang == "python":
        done = _run_python(block, tmp_path)
    else:
        done = _run_shell(block, tmp_path, make_emulator())
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
    if block.prints is not None:
        assert done.stdout == block.prints, f"{block.id} printed:\n{done.stdout}"


def test_every_page_has_its_examples_collected() -> None:
    # The collector sees the blocks a reader sees: each page's fences are closed, and every
    # marked block gives its reason.
    assert any(block.page.name == "README.md" for block in BLOCKS)
    for block in BLOCKS:
        assert block.code.strip(), block.id
    assert len([block for block in BLOCKS if block.skip is None]) >= 10
