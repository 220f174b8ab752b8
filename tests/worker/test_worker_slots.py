"""A worker with ``concurrent`` calls (a warm pool's ``max_concurrency``): its slots run at the
same time in one process, each call with its own output tail, result and deadline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from worker_harness import run_worker_process

from flyjobs._results.inbox import ResultInbox
from flyjobs._wire.call_envelope import encode_call
from flyjobs._wire.machine import EXIT_DEADLINE, EXIT_DELIVERY_FAILED, EXIT_OK, PAYLOAD_GUEST_PATH
from flyjobs._wire.result_envelope import ResultEnvelope, decode_result

SUPPORT = str(Path(__file__).resolve().parent.parent / "_support")

pytestmark = pytest.mark.anyio


def _call(fn: str, *args: object, call_id: str, url: str, deadline_s: float = 30.0) -> bytes:
    return encode_call(
        f"worker_funcs:{fn}",
        args,
        call_id=call_id,
        deadline=time.time() + deadline_s,
        result_url=url,
        sys_path=[SUPPORT],
    )


def _write_payload(root: Path, first: bytes, *concurrent: bytes, pulls: bool = False) -> None:
    # The first call carries the others: re-encode it with its `concurrent` field.
    from flyjobs._wire.call_envelope import decode_call

    call = decode_call(first)
    payload = encode_call(
        call.fn,
        call_id=call.call_id,
        deadline=call.deadline,
        result_url=call.result_url,
        sys_path=call.sys_path,
        arguments=call.arguments_data,
        concurrent=concurrent,
        pulls=pulls,
        idle_s=call.idle_s,
    )
    (root / PAYLOAD_GUEST_PATH.lstrip("/")).write_bytes(payload)


@pytest.mark.parametrize("fn", ["talk_and_meet", "async_talk_and_meet"])
async def test_concurrent_calls_run_at_once_each_with_its_own_output(
    inbox: ResultInbox, machine_root: Path, tmp_path: Path, fn: str
) -> None:
    folder = tmp_path / "meet"
    folder.mkdir()
    words = ["zero", "one", "two"]
    tickets = [inbox.expect(word) for word in words]
    calls = [
        _call(fn, str(folder), w, 3, call_id=w, url=t.url)
        for w, t in zip(words, tickets, strict=True)
    ]
    _write_payload(machine_root, *calls)
    run = await run_worker_process(machine_root)
    assert run.returncode == EXIT_OK, run.stderr
    assert all(t.delivered for t in tickets), run.stderr
    results: list[ResultEnvelope] = [decode_result(await t.result()) for t in tickets]
    for word, result in zip(words, results, strict=True):
        assert result.error is None, result.error
        assert result.stdout_tail == f"{word}\n{word}\n"  # none of the others' lines
    if fn.startswith("async"):
        # One event loop serves every async call of the machine.
        assert len({result.value(pickle=False)[1] for result in results}) == 1


@pytest.mark.slow  # a few seconds
async def test_a_call_past_its_deadline_ends_alone_and_the_others_deliver(
    inbox: ResultInbox, machine_root: Path
) -> None:
    with inbox.expect("slow") as slow, inbox.expect("stuck") as stuck:
        _write_payload(
            machine_root,
            _call("sleepy", 3.0, call_id="slow", url=slow.url),
            _call("sleepy", 600.0, call_id="stuck", url=stuck.url, deadline_s=1.0),
        )
        run = await run_worker_process(machine_root)
        # The stuck call's deadline did not end the process while the other ran: it delivered,
        # and then the machine ended (at once: the stuck call was past its deadline).
        assert slow.delivered, run.stderr
        assert decode_result(await slow.result()).value(pickle=False) == 3.0
        assert not stuck.delivered
    assert run.returncode == EXIT_DEADLINE, run.stderr
    assert "deadline passed while running worker_funcs:sleepy" in run.stderr


async def test_a_result_its_caller_gave_up_on_ends_only_its_slot(
    inbox: ResultInbox, machine_root: Path
) -> None:
    with inbox.expect("slow") as slow:
        with inbox.expect("abandoned") as abandoned:
            url = abandoned.url
        # Its ticket is closed (the caller's timeout, or a cancel): the delivery finds none.
        _write_payload(
            machine_root,
            _call("sleepy", 2.0, call_id="slow", url=slow.url),
            _call("square", 3, call_id="abandoned", url=url),
        )
        run = await run_worker_process(machine_root)
        assert slow.delivered, run.stderr
    assert "refused: HTTP 404" in run.stderr
    assert run.returncode == EXIT_DELIVERY_FAILED  # the last word of the refused slot


async def test_lines_of_calls_that_run_at_once_name_their_call(
    inbox: ResultInbox, machine_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "meet"
    folder.mkdir()
    words = ["zero", "one"]
    # A pool machine's calls (pulls): the inbox answers each delivery with no more work.
    tickets = [inbox.expect(word, replies=True, hold_s=0.1) for word in words]
    calls = [
        encode_call(
            "worker_funcs:talk_and_meet",
            (str(folder), word, 2),
            call_id=word,
            deadline=time.time() + 30,
            result_url=ticket.url,
            sys_path=[SUPPORT],
            pulls=True,
            idle_s=0.1,
        )
        for word, ticket in zip(words, tickets, strict=True)
    ]
    _write_payload(machine_root, *calls, pulls=True)
    run = await run_worker_process(machine_root)
    assert run.returncode == EXIT_OK, run.stderr
    lines = run.stdout.splitlines()
    for word in words:
        mine = [line for line in lines if word in line]
        start, end = f"flyjobs-call start {word}", f"flyjobs-call end {word}"
        assert mine == [start, f"flyjobs-call {word}: {word}", f"flyjobs-call {word}: {word}", end]
