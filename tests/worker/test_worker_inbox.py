"""The result inbox over real HTTP on 127.0.0.1: signed tickets, refusals, many calls at once."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from flyjobs import worker
from flyjobs._results.inbox import ResultInbox, Ticket
from flyjobs._wire.result_envelope import decode_result, encode_result

pytestmark = pytest.mark.anyio


async def _put(url: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.put(url, content=body)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()


async def test_delivery_is_stored_then_answered(inbox: ResultInbox) -> None:
    with inbox.expect("c1") as ticket:
        assert ticket.url.startswith(f"http://127.0.0.1:{inbox.port}/results/c1/")
        body = encode_result("c1", value=[1, (2, 3)])
        response = await _put(ticket.url, body)
        assert response.status_code == 204
        assert ticket.delivered
        assert await ticket.result() == body
    assert decode_result(body).value(pickle=False) == [1, (2, 3)]


async def test_forged_signature_is_refused(
    inbox: ResultInbox, caplog: pytest.LogCaptureFixture
) -> None:
    with inbox.expect("c1") as ticket:
        body = encode_result("c1", value=1)
        signature = parse_qs(urlsplit(ticket.url).query)["sig"][0]
        forged = _with_query(ticket.url, sig="0" * 64)
        with caplog.at_level(logging.WARNING, logger="flyjobs.inbox"):
            assert (await _put(forged, body)).status_code == 403
        # The expiry is signed too: pushing it out breaks the signature.
        later = _with_query(ticket.url, expires=str(ticket.expires_at + 3600))
        assert (await _put(later, body)).status_code == 403
        # So is the path: the URL of one call cannot deliver another's result.
        with inbox.expect("c2") as other:
            swapped = ticket.url.replace("/results/c1/", "/results/c2/")
            assert (await _put(swapped, encode_result("c2", value=1))).status_code == 403
            assert not other.delivered
        assert not ticket.delivered
    assert "bad signature" in caplog.text
    assert signature not in caplog.text and "sig=" not in caplog.text


async def test_second_delivery_is_refused(inbox: ResultInbox) -> None:
    with inbox.expect("c1") as ticket:
        first = encode_result("c1", value="first")
        assert (await _put(ticket.url, first)).status_code == 204
        assert (await _put(ticket.url, first)).status_code == 409  # replay
        assert (await _put(ticket.url, encode_result("c1", value="other"))).status_code == 409
        assert await ticket.result() == first


async def test_expired_url_is_refused() -> None:
    async with ResultInbox(ttl_s=0.5) as inbox:
        with inbox.expect("c1") as ticket:
            await anyio.sleep(max(0.0, ticket.expires_at - time.time()) + 0.05)
            response = await _put(ticket.url, encode_result("c1", value=1))
            assert response.status_code == 410
            assert not ticket.delivered


async def test_unknown_or_closed_call_is_refused(inbox: ResultInbox) -> None:
    ticket = inbox.expect("c1")
    ticket.close()
    assert (await _put(ticket.url, encode_result("c1", value=1))).status_code == 404
    with pytest.raises(RuntimeError, match="closed without a result"):
        await ticket.result()
    # A new ticket for the same call id (a retry) does not accept the old ticket's URL.
    with inbox.expect("c1") as retry:
        assert (await _put(ticket.url, encode_result("c1", value=1))).status_code == 404
        assert (await _put(retry.url, encode_result("c1", value=2))).status_code == 204


async def test_body_must_be_a_result_for_this_call(inbox: ResultInbox) -> None:
    with inbox.expect("c1") as ticket:
        assert (await _put(ticket.url, b"junk")).status_code == 400
        assert (await _put(ticket.url, encode_result("c9", value=1))).status_code == 400
        # The ticket stays open for a proper delivery.
        assert (await _put(ticket.url, encode_result("c1", value=1))).status_code == 204


async def test_oversize_body_is_refused() -> None:
    async with ResultInbox(max_body_bytes=1000) as inbox:
        with inbox.expect("c1") as ticket:
            big = encode_result("c1", value=b"x" * 5000)
            assert (await _put(ticket.url, big)).status_code == 413
            small = encode_result("c1", value=b"x" * 10)
            assert (await _put(ticket.url, small)).status_code == 204


async def test_only_put_is_accepted(inbox: ResultInbox) -> None:
    with inbox.expect("c1") as ticket:
        async with httpx.AsyncClient() as client:
            assert (await client.get(ticket.url)).status_code == 405
        assert (await _put(f"{inbox.base_url}/elsewhere", b"")).status_code == 403


async def test_call_ids_are_quoted_in_the_path(inbox: ResultInbox) -> None:
    with inbox.expect("batch 7/item:3") as ticket:
        assert "/results/batch%207%2Fitem%3A3/" in ticket.url
        body = encode_result("batch 7/item:3", value=1)
        assert (await _put(ticket.url, body)).status_code == 204


async def test_duplicate_ticket_is_refused(inbox: ResultInbox) -> None:
    with inbox.expect("c1"), pytest.raises(ValueError, match="already open"):
        inbox.expect("c1")


@pytest.mark.slow  # a few seconds
async def test_many_concurrent_tickets(inbox: ResultInbox) -> None:
    count = 2000
    tickets = [inbox.expect(f"call-{i}", ttl_s=120) for i in range(count)]
    received: dict[str, bytes] = {}

    async def wait(ticket: Ticket) -> None:
        received[ticket.call_id] = await ticket.result()

    async def deliver(i: int, limiter: anyio.CapacityLimiter) -> None:
        # The worker's own PUT, from up to 50 threads at once (as from many machines).
        body = encode_result(f"call-{i}", value=i)
        status, answer = await anyio.to_thread.run_sync(
            worker._put, tickets[i].url, body, limiter=limiter
        )
        assert (status, answer) == (204, b"")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for ticket in tickets:
                tg.start_soon(wait, ticket)
            limiter = anyio.CapacityLimiter(50)
            for i in reversed(range(count)):
                tg.start_soon(deliver, i, limiter)
    assert len(received) == count
    assert all(decode_result(received[f"call-{i}"]).value(pickle=False) == i for i in range(count))
    for ticket in tickets:
        ticket.close()
    assert "open_tickets=0" in repr(inbox)


async def test_closing_the_inbox_wakes_waiters_and_stops_serving() -> None:
    woken = anyio.Event()

    async def waiter(ticket: Ticket) -> None:
        with pytest.raises(RuntimeError, match="closed without a result"):
            await ticket.result()
        woken.set()

    async with anyio.create_task_group() as tg:
        async with ResultInbox() as inbox:
            ticket = inbox.expect("c1")
            tg.start_soon(waiter, ticket)
            await anyio.sleep(0.05)
    assert woken.is_set()
    with pytest.raises(httpx.ConnectError):
        await _put(ticket.url, b"")


async def test_repr_never_shows_the_key_or_signature(inbox: ResultInbox) -> None:
    with inbox.expect("c1") as ticket:
        signature = parse_qs(urlsplit(ticket.url).query)["sig"][0]
        texts = repr(inbox) + repr(ticket)
        assert signature not in texts
        assert inbox._key.hex() not in texts
        assert "c1" in repr(ticket)


async def test_ipv6_advertised_address_is_bracketed() -> None:
    async with ResultInbox(advertise_host="fdaa:0:1::3") as inbox:
        with inbox.expect("c/1") as ticket:
            assert ticket.url.startswith(f"http://[fdaa:0:1::3]:{inbox.port}/results/c%2F1/")


async def test_a_held_delivery_lost_with_its_connection_rejoins(inbox: ResultInbox) -> None:
    # A suspended machine's worker may find its held connection gone when it resumes: it
    # delivers the same result again, and gets the reply the pool gave (or gives) its slot.
    with inbox.expect("c1", replies=True, hold_s=60.0) as ticket:
        body = encode_result("c1", value=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_put, ticket.url, body)
            await ticket.result()
            tg.cancel_scope.cancel()  # the connection is lost before any reply
        assert (await _put(ticket.url, encode_result("c1", value=2))).status_code == 409
        ticket.reply(b"next call")
        again = await _put(ticket.url, body)
        assert (again.status_code, again.content) == (200, b"next call")
        assert await ticket.result() == body


async def test_a_resumed_worker_delivers_again_and_gets_the_held_answer(
    inbox: ResultInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wall clock jumps an hour during one look at a held answer: the machine was suspended,
    # and its connection may be gone without a word, so the worker does not wait on it.
    monkeypatch.setattr(worker, "_HELD_LOOK_S", 0.05)
    jumps = iter([0.0, 3600.0])
    monkeypatch.setattr(worker, "_clock", lambda: next(jumps))
    with inbox.expect("c1", replies=True, hold_s=60.0) as ticket:
        body = encode_result("c1", value=1)
        with pytest.raises(worker._Resumed, match="suspended for about 3600 s"):
            await anyio.to_thread.run_sync(lambda: worker._put(ticket.url, body, hold_s=60.0))
        monkeypatch.setattr(worker, "_clock", time.time)
        ticket.reply(b"next call")
        again = await anyio.to_thread.run_sync(lambda: worker._put(ticket.url, body, hold_s=60.0))
        assert again == (200, b"next call")
