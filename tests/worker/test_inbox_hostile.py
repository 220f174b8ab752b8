"""The result inbox under attack by peers that can reach its port (docs/threat-model.md, actor 3):
silent and stalled connections, malformed queries, floods of refusals."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import pytest
from _waiting import closed_by_peer

from flyjobs._results.channel import choose_channel
from flyjobs._results.inbox import ResultInbox
from flyjobs._settings import Settings
from flyjobs._wire.result_envelope import encode_result
from flyjobs._wire.seal import DELIVERY_PROOF_HEADER, delivery_proof, seal_result, ticket_id

pytestmark = pytest.mark.anyio

SUPPORT = Path(__file__).resolve().parents[1] / "_support"


async def _put(url: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.put(url, content=body)


async def _silent_connection(port: int) -> anyio.abc.SocketStream:
    return await anyio.connect_tcp("127.0.0.1", port)


async def _answer_to(stream: anyio.abc.SocketStream) -> bytes:
    """What the server sent on `stream` until it closed it (waits at most 10 s)."""
    answer = b""
    with anyio.move_on_after(10):
        try:
            while True:
                answer += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            pass
    return answer


def test_the_inbox_binds_only_the_address_machines_are_told() -> None:
    fly = Settings(api_token="t", app="a", image="i", result_key="k")
    told = choose_channel(fly, has_store=False, environ={"FLYJOBS_INBOX_HOST": "10.1.2.3"})
    assert (told.bind, told.advertise) == ("10.1.2.3", "10.1.2.3")
    private = choose_channel(fly, has_store=False, environ={"FLY_PRIVATE_IP": "fdaa:0:1::3"})
    assert (private.bind, private.advertise) == ("fdaa:0:1::3", "fdaa:0:1::3")


async def test_the_inbox_is_not_reachable_on_other_addresses() -> None:
    async with ResultInbox(host="127.0.0.1") as inbox:
        with pytest.raises(OSError):
            # Another loopback address of this host: reachable only by a wildcard bind.
            await anyio.connect_tcp("127.0.0.2", inbox.port)


@pytest.mark.parametrize(
    "query",
    [
        "expires=%C2%B2&sig=00",  # "²": a digit to str.isdigit, not to int()
        "expires=" + "9" * 5000 + "&sig=00",
        "expires=1&expires=2&sig=00",
        "expires=1&sig=%ff",
        "expires=1&" + "&".join(f"k{i}=v" for i in range(50)),
        "sig=00",
        "",
        "%",
    ],
)
async def test_a_malformed_query_is_a_4xx(query: str) -> None:
    async with ResultInbox() as inbox:
        with inbox.expect("c-q") as ticket:
            base = ticket.url.split("?", 1)[0]
            answer = await _put(f"{base}?{query}", encode_result("c-q", value=1))
            assert 400 <= answer.status_code < 500, answer.text
            # The inbox still takes the genuine delivery.
            assert (await _put(ticket.url, encode_result("c-q", value=2))).status_code == 204


async def test_silent_connections_beyond_the_cap_never_shut_out_a_delivery() -> None:
    async with ResultInbox(max_connections=8) as inbox:
        with inbox.expect("c-cap") as ticket:
            async with contextlib.AsyncExitStack() as stack:
                silent = [
                    await stack.enter_async_context(await _silent_connection(inbox.port))
                    for _ in range(30)
                ]
                answer = await _put(ticket.url, encode_result("c-cap", value=7))
                assert answer.status_code == 204
                assert inbox.server.connection_count <= 8
                closed = [await closed_by_peer(s) for s in silent[:20]]
                assert all(closed), "the oldest silent connections were not evicted"


async def test_a_connection_that_never_sends_its_request_is_closed() -> None:
    async with ResultInbox(head_timeout_s=0.2) as inbox:
        async with await _silent_connection(inbox.port) as stream:
            await stream.send(b"PUT /results/x/y HTTP/1.1\r\nHost: a\r\n")  # never the end
            assert await closed_by_peer(stream)
        assert inbox.server.connection_count == 0


async def test_a_stalled_upload_never_blocks_the_genuine_one() -> None:
    async with ResultInbox(body_timeout_s=0.5) as inbox:
        with inbox.expect("c-stall") as ticket:
            target = ticket.url.split("/", 3)[3]
            head = f"PUT /{target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
            async with await _silent_connection(inbox.port) as stalled:
                await stalled.send(head.encode() + b"partial")
                genuine = encode_result("c-stall", value="real")
                assert (await _put(ticket.url, genuine)).status_code == 204
                assert await ticket.result() == genuine
                # The stalled one is answered and closed once its body timed out.
                assert await closed_by_peer(stalled)


KEY = "inbox-hostile-result-key"


@pytest.mark.parametrize(("length", "sent"), [(1000, 1), (60 * 1024 * 1024, 1024 * 1024)])
async def test_uploads_that_only_know_the_url_are_refused_before_their_body(
    length: int, sent: int
) -> None:
    """A config reader trickling bodies (or starting huge ones) to a live URL: each is refused
    from its request head, so none holds a connection slot or buffers its body, and the genuine
    delivery gets through with every slot the attackers took back."""
    async with ResultInbox(max_connections=8, result_key=KEY, body_timeout_s=60) as inbox:
        with inbox.expect("c-abuse") as ticket:
            target = ticket.url.split("/", 3)[3]
            head = f"PUT /{target} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
            for _ in range(12):  # more than the connections the inbox holds
                async with await _silent_connection(inbox.port) as upload:
                    await upload.send(head.encode() + b"x" * sent)
                    assert (await _answer_to(upload)).startswith(b"HTTP/1.1 403 ")
            assert inbox.server.connection_count == 0
            genuine = encode_result("c-abuse", value="real")
            path = "/" + target.partition("?")[0]
            async with httpx.AsyncClient() as client:
                answer = await client.put(
                    ticket.url,
                    content=seal_result(KEY, genuine, ticket=ticket_id(ticket.url)),
                    headers={DELIVERY_PROOF_HEADER: delivery_proof(KEY, path)},
                )
            assert answer.status_code == 204, answer.text
            assert await ticket.result() == genuine


async def test_an_upload_slower_than_the_minimum_rate_is_closed() -> None:
    """A body that sends a byte before every silence would time out (here every 0.1 s, under a
    0.5 s body timeout) is still closed once it falls behind the minimum rate."""
    async with ResultInbox(body_timeout_s=0.5, min_body_rate=100) as inbox:
        with inbox.expect("c-trickle") as ticket:
            target = ticket.url.split("/", 3)[3]
            head = f"PUT /{target} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
            async with await _silent_connection(inbox.port) as trickle:
                await trickle.send(head.encode())
                closed = False
                for _ in range(100):  # 10 s of trickling at most
                    try:
                        await trickle.send(b"x")
                    except (anyio.BrokenResourceError, OSError):
                        closed = True
                        break
                    with anyio.move_on_after(0.1):
                        try:
                            await trickle.receive()  # an answer
                        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                            pass
                        closed = True
                    if closed:
                        break
                assert closed, "a trickle above the body timeout but below the rate held on"
            assert not ticket.delivered


async def test_a_newer_upload_replaces_a_stalled_one() -> None:
    async with ResultInbox(body_timeout_s=60) as inbox:
        with inbox.expect("c-newer") as ticket:
            target = ticket.url.split("/", 3)[3]
            head = (
                f"PUT /{target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                "Expect: 100-continue\r\n\r\n"
            )
            async with await _silent_connection(inbox.port) as stalled:
                await stalled.send(head.encode())
                # The inbox asks for the body once it reads it.
                assert (await stalled.receive()).startswith(b"HTTP/1.1 100 ")
                await stalled.send(b"partial")
                genuine = encode_result("c-newer", value="real")
                assert (await _put(ticket.url, genuine)).status_code == 204
                # Not held until the body timeout: replaced at once.
                assert b"HTTP/1.1 409 " in await _answer_to(stalled)
            assert await ticket.result() == genuine


@pytest.mark.slow  # a few seconds
async def test_refusals_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    async with ResultInbox(log_clock=lambda: now[0]) as inbox:
        with inbox.expect("c-log") as ticket:
            forged = ticket.url.replace("sig=", "sig=0")
            with caplog.at_level(logging.WARNING, logger="flyjobs.inbox"):
                for _ in range(100):
                    assert (await _put(forged, b"x")).status_code == 403
                assert len(caplog.records) == 10
                now[0] += 60
                assert (await _put(forged, b"x")).status_code == 403
            assert len(caplog.records) == 11
            assert "90 similar messages were not logged" in caplog.records[-1].getMessage()


CALLER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
sys.path.insert(0, {support!r})
import misuse_funcs
from flyjobs._calls.runtime import get_runtime
print(get_runtime().inbox.port, flush=True)
sys.stdin.readline()  # the attacker holds its connections now
print("result", misuse_funcs.add.remote(1, 2), flush=True)
"""

ATTACKER = """
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
held = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(1100)]
print("holding", len(held), flush=True)
sys.stdin.readline()
"""


def test_a_caller_limited_to_1024_descriptors_survives_1100_idle_connections() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FLYJOBS_"))}
    caller = subprocess.Popen(
        [sys.executable, "-c", CALLER.format(support=str(SUPPORT))],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    attacker: subprocess.Popen[str] | None = None
    try:
        assert caller.stdout is not None and caller.stdin is not None
        port = caller.stdout.readline().strip()
        assert port.isdigit(), caller.stderr.read() if caller.stderr else ""
        attacker = subprocess.Popen(
            [sys.executable, "-c", ATTACKER, port],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert attacker.stdout is not None
        assert attacker.stdout.readline().strip() == "holding 1100"
        caller.stdin.write("go\n")
        caller.stdin.flush()
        out, err = caller.communicate(timeout=120)
        assert "result 3" in out, err[-3000:]
        # Refusals were logged at a bounded rate, not once per connection.
        assert err.count("flyjobs") < 100, err[-3000:]
    finally:
        for process in (attacker, caller):
            if process is not None:
                process.kill()
                process.communicate()


async def test_a_late_delivery_is_counted_and_logged_at_debug_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A cancelled batch's machines still deliver for a moment: expected, so no warning (they
    # were drawn over the progress bar), only a count; a forged delivery is still a warning.
    late: list[str] = []
    async with ResultInbox() as inbox:
        ticket = inbox.expect("c-late", on_late=lambda: late.append("c-late"))
        delivered = inbox.expect("c-done", on_late=lambda: late.append("c-done"))
        assert (await _put(delivered.url, encode_result("c-done", value=1))).status_code == 204
        ticket.close()
        delivered.close()
        with caplog.at_level(logging.DEBUG, logger="flyjobs.inbox"):
            for _ in range(3):
                answer = await _put(ticket.url, encode_result("c-late", value=1))
                assert answer.status_code == 404
            # A second delivery of a result already taken (a worker's retried PUT): not late.
            assert (await _put(delivered.url, encode_result("c-done", value=1))).status_code == 404
            forged = ticket.url.replace("sig=", "sig=0")
            assert (await _put(forged, encode_result("c-late", value=1))).status_code == 403
    assert late == ["c-late"] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "bad signature" in warnings[0]
