"""What the caller says of a worker that could not deliver its result, from the lines a real
worker process wrote: an inbox that turned it away (full) is not an inbox it never reached."""

from __future__ import annotations

import anyio
import pytest
from worker_harness import RunWorker

from flyjobs._results.channel import undelivered_reason
from flyjobs._results.inbox import ResultInbox
from flyjobs._wire.machine import EXIT_DELIVERY_FAILED

pytestmark = pytest.mark.anyio


async def test_a_full_inbox_is_said_to_be_full(run_worker: RunWorker) -> None:
    async with ResultInbox(max_connections=1) as inbox:
        with inbox.expect("c-held") as held, inbox.expect("c-full") as ticket:
            # The one slot is held by an upload to a live URL that never finishes.
            target = held.url.split("/", 3)[3]
            head = f"PUT /{target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
            async with await anyio.connect_tcp("127.0.0.1", inbox.port) as trickle:
                await trickle.send(head.encode() + b"x")
                run = await run_worker(
                    "worker_funcs:square", 3, call_id="c-full", result_url=ticket.url
                )
    assert run.returncode == EXIT_DELIVERY_FAILED, run.stderr
    reason = undelivered_reason(run.stderr, "inbox")
    assert "the inbox was full or busy" in reason
    assert "can machines reach" not in reason


async def test_an_inbox_never_reached_is_said_to_be_unreachable(run_worker: RunWorker) -> None:
    async with ResultInbox() as inbox:
        url = inbox.expect("c-gone").url
    # The inbox is closed: nothing listens on its port any more.
    run = await run_worker("worker_funcs:square", 3, call_id="c-gone", result_url=url)
    assert run.returncode == EXIT_DELIVERY_FAILED, run.stderr
    assert "can machines reach this host?" in undelivered_reason(run.stderr, "inbox")
