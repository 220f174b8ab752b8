"""Clean-up of objects that crashed or killed clients left behind."""

from __future__ import annotations

import time

import anyio
from _store_helpers import objects
from click.testing import CliRunner

from flyjobs._results.store import STALE_OBJECT_AGE_S, Store, StoreConfig, collect_stale_objects
from flyjobs.cli import cli


def _store(bucket: str) -> Store:
    config = StoreConfig.load(f"s3://{bucket}/flyjobs")
    assert config is not None
    return Store(config)


def test_stale_call_objects_go_and_batch_journals_stay(bucket: str) -> None:
    store = _store(bucket)
    keys = ["results/fj-1", "args/fj-1", "calls/fj-2", "batches/nightly/abc"]

    async def scenario() -> tuple[list[str], list[str]]:
        for key in keys:
            await store.put(key, b"x")
        fresh = await collect_stale_objects(store, dry_run=True)
        later = time.time() + STALE_OBJECT_AGE_S + 60
        assert [o.key for o in await collect_stale_objects(store, dry_run=True, now=later)]
        gone = await collect_stale_objects(store, now=later)
        return [o.key for o in fresh], [o.key for o in gone]

    fresh, gone = anyio.run(scenario)
    assert fresh == []
    assert sorted(gone) == sorted(keys[:3])
    assert [o.key for o in objects(bucket)] == ["batches/nightly/abc"]


def test_flyjobs_gc_reports_the_store_too(fly_store: str) -> None:
    result = CliRunner().invoke(cli, ["gc", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"no stale flyjobs objects in s3://{fly_store}/flyjobs" in result.output
