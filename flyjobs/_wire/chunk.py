"""A store-mode batch machine's next chunk of calls: the object it GETs when it runs out.

A machine whose caller it cannot reach (results go through the object store) is created with its
first chunk of calls in its payload (the first call, the rest in ``then``) and, in the payload's
``chunk_url``, a presigned GET of the object that will hold its next chunk. Once it has run a
chunk (each result PUT to its own presigned URL as it finishes), it GETs that URL until the
object is there (after `POLL_FIRST_S`, then at intervals growing by half up to `POLL_MAX_S`, for
at most the call's ``idle_s``):
the object holds the next chunk's call envelopes (the same per-input items ``then`` carries) and
the presigned GET of the chunk after it. A chunk with no calls and a next URL means "nothing
yet": the machine waits for that one (its idle period starts again); one with neither means "no
more work". A machine that finds nothing within ``idle_s`` exits, as one whose inbox answered
"no more work", so a caller that vanished leaves no machine waiting.

The object is sealed with the app's result key and bound to the URL it is read from
(`flyjobs._wire.seal`): anyone who can write the bucket can make the machine stop early, never
make it run a call, and a chunk moved to another key is refused. The layout (a msgpack map)::

    {"flyjobs": 2, "calls": [bytes], "next_url": str | None}

Such a machine delivers the results of calls that end within `BUNDLE_S` of each other in one
object (a bundle), PUT to the result URL of the last of them: `BUNDLE_MARK`, then a msgpack map
``{call_id: sealed result}``. Each result in it is sealed for its own ticket as any result is,
so the bundle needs no seal of its own: a result moved into another bundle, or forged, fails
its ticket's check. A lone result is PUT as itself.
"""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]

from flyjobs._exceptions import SerializationError
from flyjobs._wire.codec import pack
from flyjobs._wire.framing import ENVELOPE_VERSION, field, read_envelope
from flyjobs._wire.seal import open_result, seal_result, ticket_id

__all__ = (
    "BUNDLE_S",
    "POLL_FIRST_S",
    "POLL_MAX_S",
    "Chunk",
    "open_bundle",
    "open_chunk",
    "pack_bundle",
    "seal_chunk",
)

#: Seconds before a machine looks for its next chunk again after the first miss, growing by half
#: with each miss up to `POLL_MAX_S` (the caller writes the next chunk before the machine needs
#: it; when it runs quicker than the caller sees its results, a chunk comes within a few tenths).
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.25

#: Seconds a store-mode batch machine holds a result to deliver it with those of the calls
#: that end after it (one request for many quick calls): a result waits no longer.
BUNDLE_S = 0.05
#: How a bundle of results begins (a sealed result never does: it is a msgpack map).
BUNDLE_MARK = b"flyjobs-bundle\n"

#: What the seal of a chunk authenticates (never taken for a result or a record).
_CHUNK = b"flyjobs-chunk"


def pack_bundle(results: dict[str, bytes]) -> bytes:
    """The object that delivers ``results`` (sealed result bodies by call id) at once."""
    return BUNDLE_MARK + pack(results)


def open_bundle(data: bytes) -> dict[str, bytes] | None:
    """The sealed results by call id in the bundle ``data``; None if it is not a bundle (a
    lone result, or malformed: each result is checked by its own ticket anyway)."""
    if not data.startswith(BUNDLE_MARK):
        return None
    try:
        results = msgpack.unpackb(data[len(BUNDLE_MARK) :], raw=False)
    except Exception:
        return None
    if not isinstance(results, dict):
        return None
    return {k: v for k, v in results.items() if isinstance(k, str) and isinstance(v, bytes)}


class Chunk:
    """The calls of one chunk, and where the next is (None: this is the last).

    :ivar calls: encoded call envelopes, run in order (empty: none yet, or no more work).
    :ivar next_url: the presigned GET of the next chunk (None: no more work after these).
    """

    __slots__ = ("calls", "next_url")

    def __init__(self, calls: list[bytes], next_url: str | None) -> None:
        self.calls = calls
        self.next_url = next_url


def seal_chunk(secret: str, url: str, calls: list[bytes], next_url: str | None) -> bytes:
    """The object a machine GETs at `url`: `calls` and `next_url`, sealed with the result key
    `secret` and bound to `url`."""
    body = pack({"flyjobs": ENVELOPE_VERSION, "calls": list(calls), "next_url": next_url})
    return seal_result(secret, body, ticket=ticket_id(url), purpose=_CHUNK)


def open_chunk(secret: str, url: str, sealed: bytes) -> Chunk:
    """The chunk read from `url`.

    :raises SerializationError: it is not sealed with `secret` for `url` (someone who can write
        the bucket put it there, or moved it from another key), or is malformed; nothing of it
        is decoded.
    """
    body = open_result(secret, sealed, ticket=ticket_id(url), purpose=_CHUNK)
    if body is None:
        raise SerializationError(
            "its next chunk of calls read from the object store is not sealed with the app's"
            " result key for this machine, so someone who can write the bucket put it there;"
            " the machine refused it unread and ran none of it"
        )
    envelope = read_envelope(body, "chunk")
    calls = field(envelope, "calls", list)
    if not all(isinstance(call, bytes) for call in calls):
        raise SerializationError("flyjobs chunk field 'calls' is malformed")
    return Chunk(calls, field(envelope, "next_url", (str, type(None))))
