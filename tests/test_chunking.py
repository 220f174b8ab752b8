"""The adaptive chunk (`flyjobs._batches.chunking`) from the round trips it is told of, a
store-mode machine's share of the inputs left, and the wire form of chunks and bulks
(`flyjobs._wire.bulk`). No clock: each round trip's figures are given."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]
import pytest

from flyjobs._batches.chunking import INPUT_COST_S, STORE_ROUND_TRIP_S, ChunkSize, store_share
from flyjobs._exceptions import SerializationError
from flyjobs._wire.bulk import decode_bulk, encode_bulk, encode_chunk, split_answer
from flyjobs._wire.call_envelope import encode_call


def _grown(chunks: ChunkSize, round_trips: int, *, run_s: float, overhead_s: float) -> list[int]:
    sizes = []
    for _ in range(round_trips):
        count = chunks.size
        chunks.observe(count, run_s * count, run_s * count + overhead_s, returned=False)
        sizes.append(chunks.size)
    return sizes


def test_the_chunk_doubles_while_the_round_trip_dominates_up_to_its_bound() -> None:
    chunks = ChunkSize(max_size=64, target_run_s=0.05)
    # Inputs of 10 µs and a round trip of 1 ms: the round trip dominates until 64.
    assert _grown(chunks, 8, run_s=1e-5, overhead_s=1e-3) == [2, 4, 8, 16, 32, 64, 64, 64]


def test_the_chunk_grows_no_further_than_its_target_run_time() -> None:
    chunks = ChunkSize(max_size=64, target_run_s=0.05)
    # 10 ms inputs behind a 100 ms round trip: 4 of them run 40 ms, 8 would run 80 ms.
    assert _grown(chunks, 5, run_s=0.01, overhead_s=0.1) == [2, 4, 4, 4, 4]


def test_the_chunk_stays_at_one_when_inputs_outrun_the_round_trip() -> None:
    chunks = ChunkSize()
    assert _grown(chunks, 3, run_s=0.02, overhead_s=0.001) == [1, 1, 1]


def test_a_slow_chunk_halves_and_a_give_back_drops_to_one() -> None:
    chunks = ChunkSize(max_size=64, target_run_s=0.05)
    _grown(chunks, 6, run_s=1e-5, overhead_s=1e-3)
    assert chunks.size == 64
    chunks.observe(64, 0.2, 0.21, returned=False)  # the inputs got slower
    assert chunks.size == 32
    chunks.observe(32, 0.01, 0.3, returned=True)  # one ran long: the rest came back
    assert chunks.size == 1


def test_a_chunk_that_was_not_full_does_not_grow_it() -> None:
    chunks = ChunkSize()
    chunks.observe(1, 1e-5, 1e-3, returned=False)
    assert chunks.size == 2
    chunks.observe(1, 1e-5, 1e-3, returned=False)  # only one input was ready
    assert chunks.size == 2


def test_an_answer_is_one_call_or_a_chunk_of_the_same_envelopes() -> None:
    calls = [
        encode_call("m:f", (i,), call_id=f"c{i}", deadline=1.0, result_url="http://h/r")
        for i in range(3)
    ]
    assert split_answer(calls[0]) == [calls[0]]
    assert split_answer(encode_chunk(calls)) == calls
    assert split_answer(b"") == []
    with pytest.raises(SerializationError, match="chunk"):
        split_answer(msgpack.packb([1, 2]))


def test_a_bulk_round_trips_and_a_malformed_one_is_refused() -> None:
    body = encode_bulk([("http://h/a", b"A"), ("http://h/b", b"B")], ["http://h/c"], answer=True)
    bulk = decode_bulk(body)
    assert bulk.results == [("http://h/a", b"A"), ("http://h/b", b"B")]
    assert bulk.returned == ["http://h/c"] and bulk.answer
    for bad in (
        b"\xc1",
        msgpack.packb([1]),
        msgpack.packb({"results": [["u"]], "returned": [], "answer": True}),
        msgpack.packb({"results": [], "returned": [], "answer": False}),
    ):
        with pytest.raises(SerializationError, match="bulk"):
            decode_bulk(bad)


def _asks(run_s: float, *, machines: int, total: int, first: int) -> tuple[list[int], int]:
    """Each of ``machines`` machines, created with ``first`` inputs each (none run yet), asks
    in turn for its next chunk of a store-mode batch of ``total``: the shares they get, and
    the inputs left to no machine."""
    unheld = total - machines * first
    shares = []
    for _ in range(machines):
        share = store_share(run_s, undone=total, unheld=unheld, held=first, machines=machines)
        share = max(0, min(share, unheld))
        unheld -= share
        shares.append(share)
    return shares, unheld


def test_quick_inputs_are_shared_evenly_among_the_machines_that_ask_for_them() -> None:
    # 1,000 inputs that run in 10 µs on 3 machines, each created with 16: the first to ask
    # does not take them all (nor the window's worth) and leave the last with nothing; the
    # last takes the few that would be left, rather than leave them a round trip of their own.
    shares, left = _asks(1e-5, machines=3, total=1000, first=16)
    assert shares == [318, 318, 316] and left == 0


def test_long_inputs_left_at_the_end_still_go_one_share_per_machine() -> None:
    # Half-second inputs: a share of one runs longer than a chunk's round trip.
    assert store_share(0.5, undone=300, unheld=200, held=2, machines=17) == 16
    assert store_share(0.5, undone=20, unheld=3, held=1, machines=17) == 1
    # A machine that holds its share already gets none until it has run some.
    assert store_share(0.5, undone=20, unheld=3, held=2, machines=17) == 0


def test_the_few_quick_inputs_left_go_in_one_chunk() -> None:
    # What would be left after an even share runs within a round trip: all of it goes now.
    assert store_share(1e-5, undone=600, unheld=300, held=100, machines=3) == 300
    assert STORE_ROUND_TRIP_S / INPUT_COST_S > 300 - 100
    # Before any input has run nothing is known to be quick: an even share.
    assert store_share(None, undone=600, unheld=300, held=100, machines=3) == 100
