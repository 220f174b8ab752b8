"""The result seal: what proves that a result, a journal record or a detached call's record came
from someone holding the app's result key, and was made for the one place it is found."""

from __future__ import annotations

__all__ = (
    "DELIVERY_PROOF_HEADER",
    "RESULT_KEY_ENV",
    "RESULT_NOT_SEALED",
    "delivery_proof",
    "open_call_record",
    "open_record",
    "open_result",
    "result_mac",
    "seal_code",
    "seal_call_record",
    "seal_record",
    "seal_result",
    "ticket_id",
)

#: The app secret (``fly secrets set``) from which the key that authenticates results is
#: derived. Machines read app secrets from their environment and the Machines API never shows
#: them in a machine's config, so someone who can read configs (and with them the result URL)
#: still cannot make a result the caller accepts. The caller has the same value in its own
#: environment. See docs/threat-model.md.
RESULT_KEY_ENV = "FLYJOBS_RESULT_KEY"

#: The body of the inbox's 403 answer to a result not sealed with its result key.
RESULT_NOT_SEALED = "the result is not authenticated by the app's result key"

# A sealed result is the result envelope, this mark, then the MAC in 64 hex digits of the
# envelope and the ticket it is for (`ticket_id`).
# The MAC travels inside the body so that it survives an object store, which keeps no header.
_SEAL_MARK = b"\n-flyjobs-mac:"
_MAC_HEX_DIGITS = 64


#: What a MAC authenticates, kept apart: a sealed result is never accepted as a journal
#: record or a detached call's record, nor the other way round.
_RESULT = b"flyjobs-result"
_JOURNAL = b"flyjobs-journal"
_CALL_RECORD = b"flyjobs-call-rec"  # person is at most 16 bytes
_DELIVERY = b"flyjobs-delivery"
_CODE = b"flyjobs-code"

#: The request header in which a worker proves, before the body, that it holds the result key:
#: the inbox refuses an upload without it from its request head, so uploads by someone who only
#: knows the URL never hold a connection or memory for their body (docs/threat-model.md).
DELIVERY_PROOF_HEADER = "Flyjobs-Delivery-Proof"


def ticket_id(result_url: str) -> str:
    """The id a result's seal binds it to: a digest of the URL the result is delivered to.

    Every ticket (inbox or store) has a URL of its own, so a sealed result captured from one
    delivery is refused by every other ticket, even one for the same call id.
    """
    from _blake2 import blake2b  # lazy: keeps machines light

    return blake2b(result_url.encode(), digest_size=16).hexdigest()


def result_mac(secret: str, body: bytes, *, purpose: bytes = _RESULT, bound: str = "") -> str:
    """The hex MAC of `body`, bound to the name `bound` (what the body is for), under the key
    derived from the app secret `secret` for `purpose`.

    Keyed BLAKE2b, a MAC by design; from ``_blake2`` because ``hashlib`` loads OpenSSL, a few
    milliseconds of every machine's start.
    """
    from _blake2 import blake2b  # lazy: keeps machines light

    key = blake2b(secret.encode(), digest_size=32, person=purpose).digest()
    # `bound` never holds a NUL (URL digests, batch and call names): the split is unambiguous.
    mac = blake2b(bound.encode() + b"\0", key=key, digest_size=32)
    mac.update(body)
    return mac.hexdigest()


def delivery_proof(secret: str, path: str) -> str:
    """The `DELIVERY_PROOF_HEADER` value for a delivery to the inbox URL path `path` (no query):
    a MAC of the path under the result key. The path names one ticket (its token is fresh), so
    a proof is good for that ticket only."""
    return result_mac(secret, path.encode("utf-8", "surrogateescape"), purpose=_DELIVERY)


def seal_code(secret: str, sha256: str, call_id: str) -> str:
    """The seal of a code bundle's sha256 (hex) in the call ``call_id``'s envelope: a machine
    holding the result key runs only the code the caller sent for that call, whoever can
    write the machine's config or the bucket the bundle travels through."""
    return result_mac(secret, sha256.encode("ascii", "replace"), purpose=_CODE, bound=call_id)


def seal_result(secret: str, body: bytes, *, ticket: str, purpose: bytes = _RESULT) -> bytes:
    """`body` (a result envelope) with its MAC under `secret` appended, as the worker sends it,
    bound to `ticket` (`ticket_id` of the URL it is delivered to)."""
    mac = result_mac(secret, body, purpose=purpose, bound=ticket)
    return body + _SEAL_MARK + mac.encode("ascii")


def open_result(
    secret: str, sealed: bytes, *, ticket: str, purpose: bytes = _RESULT
) -> bytes | None:
    """The result envelope inside `sealed`, or None unless its MAC under `secret`, bound to
    `ticket`, is right."""
    import hmac  # lazy: keeps machines light

    split = len(sealed) - _MAC_HEX_DIGITS - len(_SEAL_MARK)
    if split < 0 or sealed[split : split + len(_SEAL_MARK)] != _SEAL_MARK:
        return None
    body, mac = sealed[:split], sealed[split + len(_SEAL_MARK) :]
    expected = result_mac(secret, body, purpose=purpose, bound=ticket)
    if not hmac.compare_digest(mac, expected.encode("ascii")):
        return None
    return body


def seal_record(secret: str, name: str, data: bytes, *, purpose: bytes = _JOURNAL) -> bytes:
    """A record `data` the caller keeps in the object store under `name` (a batch journal's:
    its app, batch and input's key), sealed with the result key: the record cannot be forged,
    nor moved to another name."""
    return seal_result(secret, data, ticket=name, purpose=purpose)


def open_record(
    secret: str, name: str, sealed: bytes, *, purpose: bytes = _JOURNAL
) -> bytes | None:
    """The record inside `sealed` kept under `name`, or None unless it was sealed for it."""
    return open_result(secret, sealed, ticket=name, purpose=purpose)


def seal_call_record(secret: str, name: str, data: bytes) -> bytes:
    """A detached call's record `data`, sealed for `name` (its app and call id)."""
    return seal_record(secret, name, data, purpose=_CALL_RECORD)


def open_call_record(secret: str, name: str, sealed: bytes) -> bytes | None:
    """The detached call's record inside `sealed`, or None unless it was sealed for `name`."""
    return open_record(secret, name, sealed, purpose=_CALL_RECORD)
