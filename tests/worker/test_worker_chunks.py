"""A batch machine handed a chunk of calls (`flyjobs._wire.bulk`), against a real inbox and a
real worker process: it runs them in order, delivers their results in one bulk, and gives back
the calls waiting behind one that runs long, while that one still runs."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from worker_harness import run_worker_process

from flyjobs import worker
from flyjobs._results.inbox import ResultInbox, Ticket
from flyjobs._wire.bulk import CHUNK_HOLD_ENV, MAX_BULK_BYTES, encode_bulk, encode_chunk
from flyjobs._wire.call_envelope import encode_call
from flyjobs._wire.machine import EXIT_OK, PAYLOAD_GUEST_PATH
from flyjobs._wire.result_envelope import decode_result, encode_result
from flyjobs._wire.seal import RESULT_KEY_ENV, seal_result, ticket_id

pytestmark = pytest.mark.anyio

SUPPORT = Path(__file__).resolve().parent.parent / "_support"
#: Bounds a stuck run only; nothing is timed.
STUCK_S = 30


def _call(fn: str, *args: object, ticket: Ticket) -> bytes:
    return encode_call(
        fn,
        args,
        call_id=ticket.call_id,
        deadline=time.time() + 60,
        result_url=ticket.url,
        sys_path=[str(SUPPORT)],
        pulls=True,
        idle_s=5.0,
    )


def _value(ticket: Ticket) -> object:
    assert ticket.delivered
    return decode_result(ticket._body or b"").value(pickle=False)


@contextlib.asynccontextmanager
async def _chunk_machine(
    machine_root: Path, monkeypatch: pytest.MonkeyPatch, *, hold: bool
) -> AsyncIterator[tuple[ResultInbox, Ticket]]:
    """A real inbox and a worker process whose first call (``c0``) has delivered and waits for
    its chunk (the first ticket's reply); the worker must have exited ``EXIT_OK`` at the end.

    :param hold: no call is held back by a stall of a loaded box (for the tests that are not
        about giving back).
    """
    key = secrets.token_urlsafe(32)
    monkeypatch.setenv(RESULT_KEY_ENV, key)
    if hold:
        monkeypatch.setenv(CHUNK_HOLD_ENV, str(STUCK_S))
    exit_codes: list[int] = []
    async with ResultInbox(result_key=key) as inbox, anyio.create_task_group() as tg:
        first = inbox.expect("c0", replies=True)
        payload = _call("worker_funcs:square", 0, ticket=first)
        (machine_root / PAYLOAD_GUEST_PATH.lstrip("/")).write_bytes(payload)

        async def worker() -> None:
            exit_codes.append((await run_worker_process(machine_root)).returncode)

        tg.start_soon(worker)
        with anyio.fail_after(STUCK_S):
            await first.result()
        yield inbox, first
    assert exit_codes == [EXIT_OK]


async def test_a_chunk_runs_in_order_and_its_results_come_back_in_one_bulk(
    machine_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _chunk_machine(machine_root, monkeypatch, hold=True) as (inbox, first):
        chunk = [inbox.expect(f"c{i}", replies=True) for i in range(1, 6)]
        with anyio.fail_after(STUCK_S):
            first.reply(
                encode_chunk(
                    [_call("worker_funcs:square", i, ticket=t) for i, t in enumerate(chunk, 1)]
                )
            )
            await chunk[-1].result()
        # The bulk stored every result before the last one's (which holds the answer).
        assert [_value(t) for t in chunk] == [1, 4, 9, 16, 25]
        chunk[-1].reply(None)  # no more work: the machine exits


async def test_calls_behind_one_that_runs_long_are_given_back_while_it_runs(
    machine_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    returned: list[str] = []
    all_returned = anyio.Event()

    def on_returned(call_id: str) -> None:
        returned.append(call_id)
        if len(returned) == 2:
            all_returned.set()

    async with _chunk_machine(machine_root, monkeypatch, hold=False) as (inbox, first):
        fast = inbox.expect("fast", replies=True)
        slow = inbox.expect("slow", replies=True)
        behind = [inbox.expect(f"b{i}", replies=True, on_returned=on_returned) for i in (1, 2)]
        with anyio.fail_after(STUCK_S):
            first.reply(
                encode_chunk(
                    [
                        _call("worker_funcs:square", 7, ticket=fast),
                        _call("worker_funcs:wait_for", str(release), ticket=slow),
                        *(
                            _call("worker_funcs:square", i, ticket=t)
                            for i, t in zip((1, 2), behind, strict=True)
                        ),
                    ]
                )
            )
            # The slow call runs until the file exists: the calls behind it come back first,
            # with the result finished before it.
            await all_returned.wait()
            assert returned == ["b1", "b2"]
            assert _value(fast) == 49
            assert not slow.delivered
            assert not any(t.delivered for t in behind)
            release.touch()
            await slow.result()
        assert _value(slow) == "seen"
        slow.reply(None)


async def test_large_results_of_a_chunk_are_delivered_before_its_next_call(
    machine_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    size = MAX_BULK_BYTES // 2
    async with _chunk_machine(machine_root, monkeypatch, hold=True) as (inbox, first):
        blobs = [inbox.expect(f"blob{i}", replies=True) for i in (1, 2)]
        last = inbox.expect("last", replies=True)
        with anyio.fail_after(STUCK_S):
            first.reply(
                encode_chunk(
                    [
                        *(_call("worker_funcs:blob", size, ticket=t) for t in blobs),
                        _call("worker_funcs:wait_for", str(release), ticket=last),
                    ]
                )
            )
            # The last call waits for the file: the two large results came before it.
            await blobs[1].result()
            assert not last.delivered
            release.touch()
            await last.result()
        assert [len(_value(t)) for t in blobs] == [size, size]  # type: ignore[arg-type]
        last.reply(None)


async def test_a_bulk_without_the_key_is_refused_and_its_entries_are_checked(
    inbox_key: tuple[ResultInbox, str],
) -> None:
    inbox, key = inbox_key
    first, other = inbox.expect("c1"), inbox.expect("c2")
    results = [
        (first.url, encode_result("c1", value=1)),
        (other.url, encode_result("c2", value=2)),
    ]
    body = encode_bulk(results, [], answer=False)

    def put(sealed_with: str, body: bytes, url: str = first.url) -> int:
        sealed = seal_result(sealed_with, body, ticket=ticket_id(url))
        return worker._put(url, sealed, result_key=sealed_with, bulk=True)[0]

    assert await anyio.to_thread.run_sync(put, "not-the-key", body) == 403
    assert not first.delivered and not other.delivered
    # With the key, an entry must name its ticket's own token: a made-up one is skipped.
    forged = other.url.replace(other.url.split("/")[5].split("?")[0], "0" * 16)
    body = encode_bulk([results[0], (forged, results[1][1])], [forged], answer=False)
    assert await anyio.to_thread.run_sync(put, key, body) == 204
    assert first.delivered and not other.delivered
    assert other.call_id in inbox._tickets  # not given back either
    # A bulk goes to its first entry's URL: another ticket's URL is refused.
    body = encode_bulk([(other.url, results[1][1])], [], answer=False)
    fresh = inbox.expect("c3")
    assert await anyio.to_thread.run_sync(put, key, body, fresh.url) == 400
    assert not other.delivered
    # An entry whose ticket the caller closed is late, and counted as a single delivery is.
    late: list[str] = []
    gone = inbox.expect("c4", on_late=lambda: late.append("c4"))
    gone.close()
    entries = [(fresh.url, encode_result("c3", value=3)), (gone.url, encode_result("c4", value=4))]
    body = encode_bulk(entries, [], answer=False)
    assert await anyio.to_thread.run_sync(put, key, body, fresh.url) == 204
    assert fresh.delivered and late == ["c4"]


@pytest.fixture
async def inbox_key() -> AsyncIterator[tuple[ResultInbox, str]]:
    key = secrets.token_urlsafe(32)
    async with ResultInbox(result_key=key) as running:
        yield running, key
