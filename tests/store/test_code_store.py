"""Code bundles over the object store: one ``code/<sha256>.zip`` object however many machines
read it, detached calls carry their bundle, and a bundle replaced in the bucket is refused."""

from __future__ import annotations

import importlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _code_project import Project, make_project
from _store_helpers import objects

import flyjobs
from flyjobs._code.bundle import bundle_for, clear_cache
from flyjobs._results.store import Store, StoreConfig


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fly_store: str) -> Iterator[Project]:
    (tmp_path / "proj").mkdir()
    made = make_project(tmp_path / "proj")
    monkeypatch.syspath_prepend(str(made.root))
    # Over the inline cap: machines GET the bundle from the store.
    monkeypatch.setenv("FLYJOBS_CODE_INLINE_MAX_BYTES", "0")
    yield made
    made.forget()
    clear_cache()


def _tasks(project: Project) -> Any:
    return importlib.import_module(f"{project.jobs}.tasks")


@pytest.mark.slow
def test_a_500_input_map_uploads_its_bundle_once(project: Project, fly_store: str) -> None:
    tasks = _tasks(project)
    assert list(tasks.add_one.map(range(500))) == list(range(1, 501))
    bundle = bundle_for(f"{project.jobs}.tasks:add_one")
    assert bundle is not None
    assert [info.key for info in objects(fly_store, "code/")] == [f"code/{bundle.sha256}.zip"]


def test_a_detached_call_carries_its_bundle(project: Project, fly_store: str) -> None:
    call = _tasks(project).add_one.spawn_detached(41)
    assert call.result(timeout_s=60) == 42
    assert len(objects(fly_store, "code/")) == 1


def test_a_bundle_replaced_in_the_bucket_is_refused(
    project: Project, fly_store: str, tmp_path: Path
) -> None:
    tasks = _tasks(project)
    bundle = bundle_for(f"{project.jobs}.tasks:add_one")
    assert bundle is not None
    marker = tmp_path / "attacker-ran"
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr(f"{project.jobs}/__init__.py", "")
        archive.writestr(f"{project.jobs}/tasks.py", f"open({str(marker)!r}, 'w').write('x')\n")
    # Someone who can write the bucket puts their code at the bundle's key first.
    config = StoreConfig.load(f"s3://{fly_store}/flyjobs")
    assert config is not None
    Store(config).put_sync(f"code/{bundle.sha256}.zip", evil.getvalue())
    with pytest.raises(flyjobs.ConfigError, match=r"call fj-[0-9a-f]+.*not the one its caller"):
        tasks.add_one.remote(1)
    assert not marker.exists()
