"""Keys of the bucket that anyone who can write it may make: none breaks a listing."""

from __future__ import annotations

import os

import anyio
import httpx
import pytest
from click.testing import CliRunner

from flyjobs._results.store import Store, StoreConfig
from flyjobs.cli import cli

#: A batch name holding a terminal's title change and a bell.
HOSTILE = "ev%1B%5D0%3Bpwned%07il"


def _store(bucket: str) -> Store:
    config = StoreConfig.load(f"s3://{bucket}/flyjobs")
    assert config is not None
    return Store(config)


def test_a_key_with_a_control_character_is_skipped_by_batch_ls(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(bucket)
    # Sorted before and after the hostile key, in the same page of the listing.
    anyio.run(store.put, "batches/alpha/k1", b"x")
    anyio.run(store.put, "batches/zulu/k1", b"x")
    anyio.run(store.put, "batches/zulu/k2", b"x")
    # Written as any S3 client may (obstore refuses to write such a key itself).
    endpoint = os.environ["AWS_ENDPOINT_URL_S3"]
    assert httpx.put(f"{endpoint}/{bucket}/flyjobs/batches/{HOSTILE}/k1", content=b"x").is_success

    listed = anyio.run(store.list, "batches")
    assert sorted(info.key for info in listed) == [
        "batches/alpha/k1",
        "batches/zulu/k1",
        "batches/zulu/k2",
    ]
    monkeypatch.setenv("FLYJOBS_STORE", f"s3://{bucket}/flyjobs")
    result = CliRunner().invoke(cli, ["batch", "ls"])
    assert result.exit_code == 0, result.output
    names = [line.split("\t")[0] for line in result.output.splitlines()]
    assert names == ["alpha", "zulu"]
    assert "\x1b" not in result.output and "\x07" not in result.output
