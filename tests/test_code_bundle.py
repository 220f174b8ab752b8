"""The code bundle: what ships, its determinism and cache, its cap, and `flyjobs code`."""

from __future__ import annotations

import importlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _code_project import Project, make_project
from click.testing import CliRunner

from flyjobs import ConfigError
from flyjobs._code.bundle import bundle_for, clear_cache
from flyjobs.cli import cli


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    made = make_project(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(f"{made.jobs}.tasks")
    yield made
    made.forget()
    clear_cache()


def _ref(project: Project) -> str:
    return f"{project.jobs}.tasks:add_one"


def test_ships_the_package_the_packages_it_imports_and_their_data(project: Project) -> None:
    root = project.root
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("x")
    (root / project.jobs / "__pycache__").mkdir()
    (root / project.jobs / "__pycache__" / "tasks.cpython-311.pyc").write_bytes(b"x")
    (root / project.jobs / "venv").mkdir()
    (root / project.jobs / "venv" / "pyvenv.cfg").write_text("")
    (root / project.jobs / "secret.env").write_text("TOKEN=1")
    (root / project.jobs / "big.parquet").write_text("rows")
    (root / ".gitignore").write_text("*.env\n")
    (root / ".flyjobsignore").write_text("*.parquet\n")
    (root / "unrelated.py").write_text("x = 1\n")
    bundle = bundle_for(_ref(project))
    assert bundle is not None
    assert [source.name for source in bundle.sources] == [
        f"{project.helper}.py",
        f"{project.jobs}/__init__.py",
        f"{project.jobs}/tasks.py",
        f"{project.lib}/__init__.py",
        f"{project.lib}/table.csv",
    ]
    names = zipfile.ZipFile(io.BytesIO(bundle.data)).namelist()
    assert names == [source.name for source in bundle.sources]


def test_the_zip_is_the_same_for_the_same_files(project: Project) -> None:
    first = bundle_for(_ref(project))
    assert first is not None
    os.utime(project.tasks, ns=(1, 1))
    clear_cache()
    again = bundle_for(_ref(project))
    assert again is not None and again is not first
    assert again.data == first.data and again.sha256 == first.sha256
    infos = zipfile.ZipFile(io.BytesIO(again.data)).infolist()
    assert {(info.date_time, info.external_attr >> 16) for info in infos} == {
        ((1980, 1, 1, 0, 0, 0), 0o100644)
    }


def test_a_build_is_reused_until_a_file_changes(project: Project) -> None:
    first = bundle_for(_ref(project))
    assert bundle_for(_ref(project)) is first
    project.tasks.write_text(project.tasks.read_text() + "\n# edited\n")
    edited = bundle_for(_ref(project))
    assert edited is not None and first is not None and edited.sha256 != first.sha256
    (project.root / project.lib / "new.json").write_text("{}")
    added = bundle_for(_ref(project))
    assert added is not None and f"{project.lib}/new.json" in {s.name for s in added.sources}


def test_an_installed_module_ships_nothing() -> None:
    assert bundle_for("json:dumps") is None


def test_over_the_cap_names_the_largest_files_and_the_ignore_file(project: Project) -> None:
    (project.root / project.lib / "weights.bin").write_bytes(b"\0" * (3 * 1024 * 1024))
    with pytest.raises(ConfigError) as caught:
        bundle_for(_ref(project), max_bytes=2 * 1024 * 1024)
    message = str(caught.value)
    assert f"{project.lib}/weights.bin (3.0 MiB)" in message
    assert str(project.root / ".flyjobsignore") in message
    assert "FLYJOBS_CODE_MAX_BYTES" in message


def test_flyjobs_code_lists_what_would_ship(project: Project) -> None:
    result = CliRunner().invoke(cli, ["code", f"{project.jobs}.tasks::add_one"])
    assert result.exit_code == 0, result.output
    bundle = bundle_for(_ref(project))
    assert bundle is not None
    assert f"{project.lib}/table.csv" in result.output
    assert f"sha256 {bundle.sha256}" in result.output
    assert "travels: inline in each machine's config" in result.output


def test_a_schedules_bundle_over_the_inline_cap_is_refused(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flyjobs._calls.plan import code_bundle
    from flyjobs._calls.runtime import shutdown_runtime
    from flyjobs._declare.options import CallOptions

    shutdown_runtime()  # the settings are read from the environment below
    monkeypatch.setenv("FLYJOBS_CODE_INLINE_MAX_BYTES", "100")
    with pytest.raises(ConfigError, match=r"over the 100 bytes .*\(a URL would expire\)"):
        code_bundle(_ref(project), CallOptions(), purpose="the scheduled function x")
    assert code_bundle(_ref(project), CallOptions()) is not None  # a call fetches it instead
