"""docs/threat-model.md, replays: a sealed result captured from one delivery fits no other
ticket, and a named pool's keep-warm call ids do not repeat from one process to the next."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
import pool_funcs as funcs
import pytest
from _pool_helpers import pool_machines

import flyjobs
from flyjobs._calls.runtime import Runtime, get_runtime, shutdown_runtime
from flyjobs._results.inbox import ResultInbox
from flyjobs._wire.result_envelope import encode_result
from flyjobs._wire.seal import DELIVERY_PROOF_HEADER, delivery_proof, seal_result, ticket_id

KEY = "replay-result-key-0123456789abcdef"


def _proof(url: str) -> dict[str, str]:
    """The request head of a delivery by a key holder (the worker) to `url`."""
    path = "/" + url.split("/", 3)[3].partition("?")[0]
    return {DELIVERY_PROOF_HEADER: delivery_proof(KEY, path)}


@pytest.mark.anyio
async def test_a_delivery_captured_for_one_ticket_is_refused_by_the_next_of_that_call() -> None:
    """The seal binds the ticket (its URL), not only the call id: a genuine sealed result of
    call ``p-k0`` in one process is refused by the next process's ticket for ``p-k0``."""
    genuine = encode_result("p-k0", value=None)
    async with ResultInbox(result_key=KEY) as earlier:
        with earlier.expect("p-k0") as ticket:
            captured = seal_result(KEY, genuine, ticket=ticket_id(ticket.url))
            async with httpx.AsyncClient() as http:
                answer = await http.put(ticket.url, content=captured, headers=_proof(ticket.url))
                assert answer.status_code == 204
    async with ResultInbox(result_key=KEY) as later:
        with later.expect("p-k0") as ticket:
            async with httpx.AsyncClient() as http:
                # Even with the head a key holder would send, the captured body does not fit.
                replayed = await http.put(ticket.url, content=captured, headers=_proof(ticket.url))
                assert replayed.status_code == 403, replayed.text
                assert not ticket.delivered
                own = seal_result(KEY, genuine, ticket=ticket_id(ticket.url))
                answer = await http.put(ticket.url, content=own, headers=_proof(ticket.url))
                assert answer.status_code == 204
            assert await ticket.result() == genuine


def _first_call_id(runtime: Runtime, pool: flyjobs.Pool) -> str:
    (machine,) = pool_machines(runtime, pool)
    assert machine.config is not None and machine.config.files
    raw = machine.config.files[0].raw_value
    assert raw is not None
    envelope: dict[str, Any] = msgpack.unpackb(base64.b64decode(raw), raw=False)
    call_id: str = envelope["call_id"]
    return call_id


def test_keep_warm_call_ids_of_a_named_pool_differ_from_one_process_to_the_next(
    runtime: Runtime,
) -> None:
    seen = []
    for _ in range(2):  # each runtime stands for a process of its own
        pool = flyjobs.Pool(min=1, max=1, idle_s=60, name="replayed")
        funcs.pid_of.with_options(pool=pool)  # the pool's machines are this function's
        pool.start()
        try:
            seen.append(_first_call_id(get_runtime(), pool))
        finally:
            pool.shutdown()
        shutdown_runtime()
    assert all(call_id.startswith("replayed-") for call_id in seen)
    assert seen[0] != seen[1], seen
