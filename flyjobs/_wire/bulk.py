"""Several inputs per round trip: a chunk of calls out to a batch machine, a bulk of results back.

A batch machine that pulls its work gets its next call in the answer to its result delivery
(`flyjobs._wire.machine.NEXT_INPUT_WAIT_S`). When inputs are small and fast, that answer may
instead be a *chunk*: a msgpack array of the same call envelopes (bytes) a single answer carries,
run in order. A single envelope is a msgpack map, so the first byte tells the two apart.

The results of a chunk go back together, as one *bulk* delivery: a PUT to the result URL of its
first entry, with the header `BULK_HEADER`, whose body (sealed as one result is, bound to that
URL: `flyjobs._wire.seal.seal_result`) is the msgpack map::

    {"results": [[result_url, result envelope], ...],  # in the chunk's order
     "returned": [result_url, ...],                     # calls of the chunk the machine gives
                                                        # back unrun (see CHUNK_HOLD_S)
     "answer": bool}                                    # answered as a single delivery is
                                                        # (next call, chunk, or none); False:
                                                        # no answer is wanted (the machine still
                                                        # runs a call of the chunk, or exits)

An input of a chunk that runs longer than `CHUNK_HOLD_S` while calls after it wait makes the
machine deliver what it has finished and give back the calls it has not started (no
``answer``), so that they run on other machines instead of waiting behind a slow one. Results
that add up to `MAX_BULK_BYTES` are delivered (without an answer) before the chunk's next
call. Each entry names its own result URL, so each input keeps its own ticket, deadline,
retries and outcome.

Stdlib + msgpack only: the worker imports it.
"""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]

from flyjobs._exceptions import SerializationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = (
    "BULK_HEADER",
    "CHUNK_HOLD_ENV",
    "CHUNK_HOLD_S",
    "MAX_BULK_BYTES",
    "Bulk",
    "decode_bulk",
    "encode_bulk",
    "encode_chunk",
    "chunk_hold_s",
    "split_answer",
)

#: The request header that marks a result delivery as a bulk (its value: ``1``).
BULK_HEADER = "Flyjobs-Bulk"
#: Seconds an input of a chunk may run while calls after it wait, before the machine delivers
#: the results it has and gives back the calls it has not started.
CHUNK_HOLD_S = 0.1
#: A machine's environment variable that sets `CHUNK_HOLD_S` otherwise (seconds; for tests
#: that must not see a loaded box's stall as a slow input, and for tuning).
CHUNK_HOLD_ENV = "FLYJOBS_CHUNK_HOLD_S"


def chunk_hold_s(environ: Mapping[str, str]) -> float:
    """`CHUNK_HOLD_S`, or the positive number of seconds ``environ`` sets in `CHUNK_HOLD_ENV`."""
    try:
        value = float(environ.get(CHUNK_HOLD_ENV, ""))
    except ValueError:
        return CHUNK_HOLD_S
    return value if value > 0 else CHUNK_HOLD_S


#: Bytes of results a machine keeps before it delivers them, while calls of its chunk remain:
#: a bulk stays far below what the inbox accepts (`flyjobs._wire.machine.MAX_INBOX_RESULT_BYTES`).
MAX_BULK_BYTES = 4 * 1024 * 1024


def encode_chunk(calls: list[bytes]) -> bytes:
    """The answer that hands a machine ``calls`` (encoded call envelopes) to run in order."""
    packed: bytes = msgpack.packb(calls, use_bin_type=True)
    return packed


def split_answer(answer: bytes) -> list[bytes]:
    """The call envelopes an answer to a delivery carries: one (a map), or a chunk's (an array).

    :raises SerializationError: the answer is an array of something other than envelopes.
    """
    if not answer:
        return []
    if not (0x90 <= answer[0] <= 0x9F or answer[0] in (0xDC, 0xDD)):  # msgpack arrays
        return [answer]
    try:
        calls = msgpack.unpackb(answer, raw=False)
    except Exception as exc:
        raise SerializationError(f"not a chunk of calls: {exc}") from exc
    if not isinstance(calls, list) or not all(isinstance(each, bytes) for each in calls):
        raise SerializationError("not a chunk of calls: an array of call envelopes is expected")
    return calls


class Bulk:
    """A bulk delivery, decoded (see the module docstring).

    :ivar results: ``(result URL, result envelope)`` pairs, in the chunk's order.
    :ivar returned: result URLs of the calls given back unrun.
    :ivar answer: the machine waits for its next call in the answer.
    """

    __slots__ = ("answer", "results", "returned")

    def __init__(self, results: list[tuple[str, bytes]], returned: list[str], answer: bool) -> None:
        self.results = results
        self.returned = returned
        self.answer = answer


def encode_bulk(results: list[tuple[str, bytes]], returned: list[str], *, answer: bool) -> bytes:
    """The body of a bulk delivery (before its seal)."""
    body = {"results": [list(pair) for pair in results], "returned": returned, "answer": answer}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode_bulk(body: bytes) -> Bulk:
    """A bulk delivery's body (its seal already checked).

    :raises SerializationError: it is not one.
    """
    try:
        data = msgpack.unpackb(body, raw=False)
    except Exception as exc:
        raise SerializationError(f"not a bulk of results: {exc}") from exc
    if not isinstance(data, dict):
        raise SerializationError("not a bulk of results")
    results, returned, answer = data.get("results"), data.get("returned"), data.get("answer")
    if (
        not isinstance(results, list)
        or not isinstance(returned, list)
        or not isinstance(answer, bool)
        or not all(
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], bytes)
            for pair in results
        )
        or not all(isinstance(url, str) for url in returned)
    ):
        raise SerializationError("not a bulk of results: malformed entries")
    if not results and not returned:
        raise SerializationError("an empty bulk of results")
    return Bulk([(url, envelope) for url, envelope in results], returned, answer)
