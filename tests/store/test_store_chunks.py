"""Store-mode batch machines take more work as they finish: each reads its next chunk of inputs
from the store (sealed, at a URL presigned ahead of time), so a batch from outside Fly uses at
most ``max_machines`` machines."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import store_funcs as funcs
from _store_helpers import APP, live_machines, objects
from _waiting import eventually

from flyjobs._batches.batch import MAX_SLICE, Batch
from flyjobs._calls.runtime import Runtime, get_runtime
from flyjobs._results.channel import StoreTicket
from flyjobs._results.chunks import ChunkFeed
from flyjobs._results.store import STALE_OBJECT_AGE_S, Store, StoreConfig, collect_stale_objects
from flyjobs._wire.call_envelope import decode_call, encode_call
from flyjobs._wire.chunk import seal_chunk
from flyjobs._wire.machine import EXIT_BAD_PAYLOAD, EXIT_OK, PAYLOAD_GUEST_PATH
from flyjobs._wire.result_envelope import decode_result
from flyjobs._wire.seal import open_result, ticket_id

from .conftest import RESULT_KEY

SUPPORT = str(Path(__file__).resolve().parent.parent / "_support")


def _machines_created() -> int:
    runtime = get_runtime()
    machines = runtime.portal.call(lambda: runtime.client.list_machines(APP, include_deleted=True))
    return len(machines)


@pytest.mark.slow  # 500 inputs: several seconds
def test_a_store_batch_of_500_inputs_uses_at_most_max_machines(fly_store: str) -> None:
    results = funcs.double.map(range(500), max_machines=8)
    assert list(results) == [2 * x for x in range(500)]
    summary = results.summary()
    assert (summary.done, summary.failed, summary.retried) == (500, 0, 0)
    assert 1 <= summary.machines <= 8
    assert _machines_created() == summary.machines
    eventually(lambda: live_machines() == [], "every machine is gone")
    # Results and chunks deleted once read (a machine's last chunks as its task ends, which
    # may be just after the emulator reports the machine gone); a leaked one never goes.
    eventually(lambda: objects(fly_store) == [], "every result and chunk deleted")


def test_a_machine_killed_mid_chunk_reruns_only_what_it_did_not_deliver(
    fly_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger, marker, go = (str(tmp_path / name) for name in ("ledger", "marker", "go"))
    inputs = [(x, 5, ledger, marker, go) for x in range(12)]
    results = funcs.crash_once_at.starmap(inputs, max_machines=1, progress=True)
    values = [next(results) for _ in range(5)]  # delivered: the machine then dies at input 5
    Path(go).touch()
    assert values + list(results) == list(range(12))
    runs = Counter(int(line) for line in Path(ledger).read_text().split())
    # Input 5 ran twice (its machine died running it); every other input once: those its
    # machine delivered before were not run again, those after it ran on the next machine.
    assert runs == {x: 2 if x == 5 else 1 for x in range(12)}
    summary = results.summary()
    assert (summary.done, summary.failed) == (12, 0)
    assert summary.retried >= 1 and summary.machines >= 2
    final = capsys.readouterr().err.strip().splitlines()[-1]
    counts = dict(re.findall(r"(queued|starting|running) (-?\d+)", final))
    assert counts == {"queued": "0", "starting": "0", "running": "0"}, final
    eventually(lambda: live_machines() == [], "every machine is gone")
    eventually(lambda: objects(fly_store) == [], "every result and chunk deleted")


async def _chunk_case(bucket: str, tmp_path: Path, forge: str) -> tuple[int, bytes | None]:
    """Run a worker whose payload's next chunk is a `touch` of a file, written as ``forge``
    says (``sealed``: as the caller does; ``other key``, ``moved``: as someone who can only
    write the bucket could). Return its exit code and the `touch` result's object."""
    config = StoreConfig.load(f"s3://{bucket}/flyjobs")
    assert config is not None
    store = Store(config)
    expires = time.time() + 300
    feed = ChunkFeed(store, "chunk-test-m0", RESULT_KEY)
    chunk_url = feed.next_url(expires)
    first_put = store.presign("PUT", "results/first", expires_at=expires)
    touch_put = store.presign("PUT", "results/touch", expires_at=expires)
    touch_call = encode_call(
        "store_funcs:touch",
        (str(tmp_path / "touched"),),
        call_id="touch",
        deadline=expires,
        result_url=touch_put,
        sys_path=[SUPPORT],
    )
    if forge == "sealed":
        await feed.write([touch_call], None)
    else:
        key, url = ("other-key", chunk_url) if forge == "other key" else (RESULT_KEY, "elsewhere")
        await store.put("chunks/chunk-test-m0/1", seal_chunk(key, url, [touch_call], None))
    payload = encode_call(
        "store_funcs:double",
        (21,),
        call_id="first",
        deadline=expires,
        result_url=first_put,
        sys_path=[SUPPORT],
        chunk_url=chunk_url,
        idle_s=1.0,
    )
    path = tmp_path / "root" / PAYLOAD_GUEST_PATH.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flyjobs.worker", "--payload", str(path), cwd=tmp_path
    )
    code = await asyncio.wait_for(process.wait(), 60)
    first = await store.get("results/first")
    assert first is not None  # the first call ran and delivered either way
    body = open_result(RESULT_KEY, first, ticket=ticket_id(first_put))
    assert body is not None and decode_result(body).value(pickle=False) == 42
    return code, await store.get("results/touch")


@pytest.mark.parametrize("forge", ["other key", "moved"])
def test_a_chunk_swapped_in_the_bucket_is_refused_and_runs_nothing(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forge: str
) -> None:
    monkeypatch.setenv("FLYJOBS_RESULT_KEY", RESULT_KEY)
    code, touched = asyncio.run(_chunk_case(bucket, tmp_path, forge))
    assert code == EXIT_BAD_PAYLOAD
    assert touched is None and not (tmp_path / "touched").exists()


def test_a_chunk_sealed_by_the_caller_runs(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYJOBS_RESULT_KEY", RESULT_KEY)
    code, touched = asyncio.run(_chunk_case(bucket, tmp_path, "sealed"))
    assert code == EXIT_OK
    assert touched is not None and (tmp_path / "touched").exists()


KILLED_CALLER = """
import os, signal, sys
sys.path.insert(0, {support!r})
import store_funcs
results = store_funcs.slow_square.starmap([(x, 0.2) for x in range(60)], max_machines=2)
next(results)  # machines run, their next chunks are in the store
os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no cleanup
"""


@pytest.mark.slow  # the machines run out their chunks and idle period: several seconds
def test_machines_of_a_killed_caller_end_by_themselves_and_gc_removes_its_objects(
    fly_store: str, tmp_path: Path
) -> None:
    caller = subprocess.run(
        [sys.executable, "-c", KILLED_CALLER.format(support=SUPPORT)],
        cwd=tmp_path,
        timeout=120,
        capture_output=True,
        text=True,
        check=False,
    )
    assert caller.returncode == -signal.SIGKILL, caller.stderr
    left = [info.key for info in objects(fly_store)]
    assert any(key.startswith("chunks/") for key in left), left
    # Each machine runs what it was given, waits its idle period for a chunk that never
    # comes, and exits; nothing destroys it.
    eventually(lambda: live_machines() == [], "the killed caller's machines ended", 120)

    async def gc() -> list[str]:
        config = StoreConfig.load(f"s3://{fly_store}/flyjobs")
        assert config is not None
        later = time.time() + STALE_OBJECT_AGE_S + 60  # as `flyjobs gc` a week later
        return [info.key for info in await collect_stale_objects(Store(config), now=later)]

    assert set(asyncio.run(gc())) >= set(left)
    assert objects(fly_store) == []


async def _bundled_run(bucket: str, tmp_path: Path) -> tuple[int, list[bool], list[str]]:
    """A worker runs three quick calls of one chunk; return its exit code, whether each
    call's ticket found its result, and the result keys left in the store."""
    config = StoreConfig.load(f"s3://{bucket}/flyjobs")
    assert config is not None
    store = Store(config)
    expires = time.time() + 300
    tickets = [
        StoreTicket(store, f"b-{i}", expires_at=expires, seal_key=RESULT_KEY) for i in range(3)
    ]
    calls = [
        encode_call(
            "store_funcs:double",
            (i,),
            call_id=ticket.call_id,
            deadline=expires,
            result_url=ticket.url,
            sys_path=[SUPPORT],
        )
        for i, ticket in enumerate(tickets)
    ]
    feed = ChunkFeed(store, "bundle-test-m0", RESULT_KEY)
    payload = decode_call(calls[0])
    path = tmp_path / "root" / PAYLOAD_GUEST_PATH.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_bytes(
        encode_call(
            payload.fn,
            (0,),
            call_id=payload.call_id,
            deadline=expires,
            result_url=payload.result_url,
            sys_path=[SUPPORT],
            then=calls[1:],
            chunk_url=feed.next_url(expires),
        )
    )
    await feed.write([], None)  # no more work after the first chunk
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flyjobs.worker", "--payload", str(path), cwd=tmp_path
    )
    code = await asyncio.wait_for(process.wait(), 60)
    keys = sorted(info.key for info in await store.list("results"))
    found = [await ticket.fetch() for ticket in reversed(tickets)][::-1]
    return code, found, keys


def test_results_of_quick_calls_travel_in_one_object_each_checked_by_its_own_ticket(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYJOBS_RESULT_KEY", RESULT_KEY)
    code, found, keys = asyncio.run(_bundled_run(bucket, tmp_path))
    assert code == EXIT_OK
    # Calls that end within BUNDLE_S of each other share one object, at the last one's key (a
    # thread delivers every BUNDLE_S, so a busy box may cut them in more); each ticket finds
    # its own result, in the object of its key or in a later one's.
    assert keys[-1] == "results/b-2" and len(keys) <= 3
    assert found == [True, True, True]


def _chunk_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of calls in each chunk written from now on, as they are written."""
    sizes: list[int] = []
    write = ChunkFeed.write

    async def counted(self: ChunkFeed, calls: list[bytes], next_expires_at: float | None) -> str:
        sizes.append(len(calls))
        return await write(self, calls, next_expires_at)

    monkeypatch.setattr(ChunkFeed, "write", counted)
    return sizes


def test_quick_inputs_go_in_chunks_larger_than_a_first_slice(
    fly_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each next chunk costs the caller a look at the store's results before it is written: a
    # machine running quick inputs takes many per chunk (not MAX_SLICE), so few round trips.
    sizes = _chunk_writes(monkeypatch)
    results = funcs.double.map(range(300), max_machines=1)
    assert list(results) == [2 * x for x in range(300)]
    assert max(sizes) > MAX_SLICE, sizes
    assert objects(fly_store) == []


def test_quick_machines_end_after_their_results_are_read(
    fly_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Quick inputs: each machine's last chunk runs in a moment. "No more work" waits for its
    # results, so no machine exits before the caller has read its last bundles (an input
    # whose result is in a bundle would wait for its machine's exit to be explained), and a
    # result is found however it came.
    late: list[str] = []
    late_result = Batch._late_result

    async def counted(self: Batch, held: Any, feed: Any, error: Any) -> Any:
        late.append(held.call_id)
        return await late_result(self, held, feed, error)

    monkeypatch.setattr(Batch, "_late_result", counted)
    results = funcs.double.map(range(1000), max_machines=3)
    assert list(results) == [2 * x for x in range(1000)]
    summary = results.summary()
    assert (summary.done, summary.failed, summary.retried) == (1000, 0, 0)
    assert late == []
    assert objects(fly_store) == []


READ_AS_A_MACHINE = """
import sys
from flyjobs.worker import _get_object
print(_get_object(sys.argv[1], 10.0), _get_object(sys.argv[2], 10.0))
print("urllib.request" in sys.modules)
"""


def test_a_machine_reads_its_chunks_from_a_plain_http_store_without_urllib(bucket: str) -> None:
    # urllib's imports (the email package, ssl) would cost every machine tens of ms of CPU
    # before its second chunk: a store on plain HTTP is read by hand, as results are written.
    config = StoreConfig.load(f"s3://{bucket}/flyjobs")
    assert config is not None
    store = Store(config)
    asyncio.run(store.put("chunks/read-test-m0/1", b"a sealed chunk"))
    expires = time.time() + 300
    there = store.presign("GET", "chunks/read-test-m0/1", expires_at=expires)
    missing = store.presign("GET", "chunks/read-test-m0/2", expires_at=expires)
    read = subprocess.run(
        [sys.executable, "-c", READ_AS_A_MACHINE, there, missing],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert read.stdout.splitlines() == ["b'a sealed chunk' None", "False"]


def test_a_chunk_read_is_deleted_by_one_task_not_one_per_input(
    fly_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each input whose result comes in tells its chunk was read; the chunk's deletion is one
    # background task (the caller's loop spends its time on results, not on spawning tasks).
    written = _chunk_writes(monkeypatch)
    about_chunks: list[object] = []
    background = Runtime.background

    def watched(self: Runtime, fn: Callable[[], Awaitable[None]]) -> None:
        if isinstance(getattr(getattr(fn, "func", None), "__self__", None), ChunkFeed):
            about_chunks.append(fn)
        background(self, fn)

    monkeypatch.setattr(Runtime, "background", watched)
    results = funcs.double.map(range(300), max_machines=1)
    assert list(results) == [2 * x for x in range(300)]
    assert len(about_chunks) <= len(written) < 300
    eventually(lambda: objects(fly_store) == [], "every result and chunk deleted")
