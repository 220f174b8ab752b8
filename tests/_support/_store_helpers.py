"""Helpers of the object-store tests (tests/store)."""

from __future__ import annotations

import asyncio

from flyjobs._calls.runtime import get_runtime
from flyjobs._results.store import ObjectInfo, Store, StoreConfig

#: The app the store tests' machines run in.
APP = "flyjobs-store"


def objects(bucket: str, prefix: str = "") -> list[ObjectInfo]:
    """Every object of the store ``s3://bucket/flyjobs`` under `prefix`."""
    config = StoreConfig.load(f"s3://{bucket}/flyjobs")
    assert config is not None
    return asyncio.run(Store(config).list(prefix))


def live_machines() -> list[str]:
    runtime = get_runtime()
    machines = runtime.portal.call(lambda: runtime.client.list_machines(APP))
    return [m.id for m in machines if m.state != "destroyed"]
