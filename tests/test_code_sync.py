"""Code sync end to end: the caller's code travels with its calls (embedded emulator, real
worker processes), is checked against the hash sealed in the call, and wins over the image's."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _code_project import Project, make_project
from _remote_helpers import machines

import flyjobs
from flyjobs._calls.plan import Plan
from flyjobs._calls.runtime import Runtime
from flyjobs._code.bundle import clear_cache
from flyjobs._wire.machine import CODE_GUEST_DIR

pytestmark = pytest.mark.usefixtures("no_machine_left")

BODY = "\n\n@flyjobs.remote\ndef where():\n    import os\n    return __file__, os.getcwd()\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> Iterator[Project]:
    made = make_project(tmp_path, body=BODY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield made
    made.forget()
    clear_cache()


def _tasks(project: Project) -> Any:
    return importlib.import_module(f"{project.jobs}.tasks")


def test_a_call_imports_the_function_from_its_bundle(project: Project) -> None:
    tasks = _tasks(project)
    assert tasks.add_one.remote(4) == 5
    file, _cwd = tasks.where.remote()
    assert f"{CODE_GUEST_DIR}/" in file and file.endswith(f"/{project.jobs}/tasks.py")


def test_a_machine_never_sees_the_callers_folder(project: Project) -> None:
    file, cwd = _tasks(project).where.remote()
    assert not file.startswith(str(project.root)) and not cwd.startswith(str(project.root))
    assert not cwd.startswith(os.getcwd() + os.sep) and cwd != os.getcwd()


def test_a_map_and_a_pool_call_import_from_the_bundle(project: Project) -> None:
    tasks = _tasks(project)
    assert list(tasks.add_one.map(range(5))) == [1, 2, 3, 4, 5]
    pool = flyjobs.Pool(max=1, idle_s=5)
    try:
        pooled = tasks.add_one.with_options(pool=pool)
        assert [pooled.remote(i) for i in (10, 20)] == [11, 21]
    finally:
        pool.shutdown()


def test_a_bundle_over_the_inline_cap_is_fetched_from_the_inbox_once_per_machine(
    project: Project, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        runtime, "settings", dataclasses.replace(runtime.settings, code_inline_max_bytes=0)
    )
    inbox = runtime.channel.inbox
    assert inbox is not None
    before, known = sum(inbox.code_gets.values()), {m.id for m in machines(runtime)}
    results = _tasks(project).add_one.map(range(40), max_machines=3)
    assert list(results) == list(range(1, 41))
    batch = [m for m in machines(runtime) if m.id not in known]
    assert 1 <= sum(inbox.code_gets.values()) - before == len(batch) <= 3


def test_code_image_runs_the_images_copy_which_lacks_the_module(project: Project) -> None:
    image = _tasks(project).add_one.with_options(code="image")
    with pytest.raises(flyjobs.RemoteImportError, match=project.jobs) as caught:
        image.remote(1)
    assert "ModuleNotFoundError" in caught.value.type_name


def test_a_data_file_over_the_cap_is_refused_before_any_machine(
    project: Project, runtime: Runtime
) -> None:
    big = project.root / project.lib / "weights.bin"
    with big.open("wb") as file:
        file.truncate(40 * 1024 * 1024)
    before = len(machines(runtime))
    with pytest.raises(flyjobs.ConfigError, match=rf"{project.lib}/weights.bin \(40.0 MiB\)"):
        _tasks(project).add_one.remote(1)
    assert len(machines(runtime)) == before


def test_an_edit_runs_at_the_next_call(project: Project) -> None:
    tasks = _tasks(project)
    assert tasks.add_one.remote(1) == 2
    project.tasks.write_text(project.tasks.read_text().replace("- x\n", "- x + 100\n"))
    project.forget()
    assert _tasks(project).add_one.remote(1) == 102


def _evil_zip(project: Project, marker: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            f"{project.jobs}/tasks.py",
            f"open({str(marker)!r}, 'w').write('ran')\n",
        )
        archive.writestr(f"{project.jobs}/__init__.py", "")
    return buffer.getvalue()


def test_a_replaced_bundle_is_refused_unread(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "attacker-ran"
    evil = _evil_zip(project, marker)
    real = Plan.machine_config

    def tampered(self: Plan, name: str, payload: bytes, *, deadline: float | None) -> Any:
        config = real(self, name, payload, deadline=deadline)
        assert self.code is not None
        import base64

        for file in config.files or []:
            if file.guest_path.endswith(f"{self.code.sha256}.zip"):
                file.raw_value = base64.b64encode(evil).decode()
        return config

    monkeypatch.setattr(Plan, "machine_config", tampered)
    with pytest.raises(flyjobs.ConfigError, match=r"call fj-[0-9a-f]+.*not the one its caller"):
        _tasks(project).add_one.remote(1)
    assert not marker.exists()


def test_a_bundle_hash_not_sealed_for_the_call_is_refused(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "attacker-ran"
    evil = _evil_zip(project, marker)
    import hashlib

    evil_sha = hashlib.sha256(evil).hexdigest()
    real_field, real_config = Plan.code_field, Plan.machine_config

    def code_field(self: Plan, call_id: str) -> Any:
        field = real_field(self, call_id)
        assert field is not None
        # Someone who can write the config replaces the bundle and its hash, not the seal.
        return {**field, "sha256": evil_sha, "path": f"{CODE_GUEST_DIR}/{evil_sha}.zip"}

    def config(self: Plan, name: str, payload: bytes, *, deadline: float | None) -> Any:
        made = real_config(self, name, payload, deadline=deadline)
        import base64

        for file in made.files or []:
            if file.guest_path.startswith(CODE_GUEST_DIR):
                file.guest_path = f"{CODE_GUEST_DIR}/{evil_sha}.zip"
                file.raw_value = base64.b64encode(evil).decode()
        return made

    monkeypatch.setattr(Plan, "code_field", code_field)
    monkeypatch.setattr(Plan, "machine_config", config)
    with pytest.raises(flyjobs.ConfigError, match=r"call fj-[0-9a-f]+.*not sealed"):
        _tasks(project).add_one.remote(1)
    assert not marker.exists()


def _fake_distribution(folder: Path, version: str) -> None:
    """An installed distribution ``fakedist_mod`` in ``folder`` (a site folder of the caller
    that the machine, standing in for an image without it, does not have)."""
    (folder / "fakedist_mod").mkdir(parents=True)
    (folder / "fakedist_mod" / "__init__.py").write_text("VALUE = 7\n")
    info = folder / f"fakedist_mod-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: fakedist_mod\nVersion: {version}\n"
    )


def test_a_distribution_the_image_lacks_is_named_with_the_image(
    project: Project, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path_factory.mktemp("caller-site")
    _fake_distribution(site, "1.4.2")
    monkeypatch.syspath_prepend(str(site))
    (project.root / project.jobs / "fake_user.py").write_text(
        "import flyjobs\nimport fakedist_mod\n\n\n@flyjobs.remote\n"
        "def value():\n    return fakedist_mod.VALUE\n"
    )
    fake_user = importlib.import_module(f"{project.jobs}.fake_user")
    assert fake_user.value.local() == 7
    with pytest.raises(flyjobs.RemoteImportError) as caught:
        fake_user.value.remote()
    message = str(caught.value)
    assert "fakedist_mod (1.4.2 here), which is not installed in" in message
    assert "rebuild the image" in message


def test_a_version_that_differs_from_the_images_is_one_line(
    project: Project, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (project.root / project.jobs / "packs.py").write_text(
        "import flyjobs\nimport msgpack\n\n\n@flyjobs.remote\n"
        "def packed(x):\n    return msgpack.packb(x)\n"
    )
    record = tmp_path / "distributions.json"
    record.write_text('{"msgpack": "0.0.1"}')
    packs = importlib.import_module(f"{project.jobs}.packs")
    env = {"FLYJOBS_IMAGE_DISTRIBUTIONS": str(record)}
    assert packs.packed.with_options(env=env).remote(1) == b"\x01"
    shown = "".join(capfd.readouterr())
    here = importlib.metadata.version("msgpack")
    assert f"flyjobs: msgpack {here} here, 0.0.1 in " in shown
    assert shown.count("rebuild the image") == 1


#: Runs the cell on stdin as a notebook kernel does: its source in linecache, under a name
#: that is no file, in ``__main__``.
NOTEBOOK = """
import linecache, sys
cell = sys.stdin.read()
linecache.cache["<cell-1>"] = (len(cell), None, cell.splitlines(True), "<cell-1>")
exec(compile(cell, "<cell-1>", "exec"), vars(sys.modules["__main__"]))
"""

CELL = """
import math, threading
import flyjobs
import nb_helpers
from nb_helpers import triple

SCALE = 10

def inner(x):
    return x + 1

@flyjobs.remote
def f(x):
    return triple(inner(x)) * SCALE + int(math.sqrt(16)) + nb_helpers.triple(0)

print(f.remote(1), list(f.map([1, 2])))

LOCK = threading.Lock()

@flyjobs.remote
def g():
    with LOCK:
        return 1

try:
    g.remote()
except flyjobs.SerializationError as exc:
    print("refused:", exc)
"""


def _run(tmp_path: Path, *args: str, stdin: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    done = subprocess.run(
        [sys.executable, *args],
        input=stdin,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_notebook_cells_function_ships_by_its_source(tmp_path: Path) -> None:
    (tmp_path / "nb_helpers.py").write_text("def triple(x):\n    return 3 * x\n")
    out = _run(tmp_path, "-c", NOTEBOOK, stdin=CELL).splitlines()
    assert out[0] == "64 [64, 94]"
    assert out[1].startswith("refused: g uses 'LOCK', a lock of this session")


def test_a_scripts_function_ships_the_script(tmp_path: Path) -> None:
    (tmp_path / "script_helpers.py").write_text("def half(x):\n    return x // 2\n")
    (tmp_path / "jobs.py").write_text(
        "import flyjobs\nimport script_helpers\n\n\n@flyjobs.remote\n"
        "def half(x):\n    return script_helpers.half(x)\n\n\n"
        'if __name__ == "__main__":\n    print(half.remote(84))\n'
    )
    assert _run(tmp_path, "jobs.py").strip() == "42"
