"""What every flyjobs envelope shares: its version, reading one, its fields, and pickle.

Imported by the worker runtime: standard library and msgpack only at import time.
"""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]

from flyjobs._exceptions import SerializationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("ENVELOPE_VERSION", "dumps_pickle", "field", "loads_pickle", "read_envelope")

#: Version of the envelope layout; a payload of another version is refused.
ENVELOPE_VERSION = 2

_PICKLE_PROTOCOL = 5


def read_envelope(data: bytes, kind: str) -> dict[str, Any]:
    """The map a ``kind`` (``"call"``, ``"result"``) envelope holds.

    :raises SerializationError: `data` is not a flyjobs envelope of this version.
    """
    try:
        envelope = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise SerializationError(f"not a flyjobs {kind} envelope: {exc}") from exc
    if not isinstance(envelope, dict) or "flyjobs" not in envelope:
        raise SerializationError(f"not a flyjobs {kind} envelope")
    if envelope["flyjobs"] != ENVELOPE_VERSION:
        raise SerializationError(
            f"flyjobs {kind} envelope version {envelope['flyjobs']!r} is not supported "
            f"(this side speaks version {ENVELOPE_VERSION}); use the same flyjobs on both sides"
        )
    return envelope


def field(envelope: dict[str, Any], name: str, kinds: type | tuple[type, ...]) -> Any:
    """``envelope[name]``, checked to be one of `kinds`.

    :raises SerializationError: the field is missing or of another type.
    """
    value = envelope.get(name)
    if not isinstance(value, kinds):
        raise SerializationError(f"flyjobs envelope field {name!r} is missing or malformed")
    return value


def dumps_pickle(obj: object, what: str) -> bytes:
    """`obj` as a pickle (only for calls that opted in).

    :raises SerializationError: naming `what` cannot be pickled.
    """
    import pickle  # lazy: keeps machines light

    try:
        return pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)
    except Exception as exc:
        raise SerializationError(f"{what} cannot be pickled: {exc}") from exc


def loads_pickle(data: bytes, what: str) -> Any:
    """Unpickle `data`: only ever data whose sender was authenticated (see docs/threat-model.md).

    :raises SerializationError: naming `what` cannot be unpickled here.
    """
    import pickle  # lazy: keeps machines light

    try:
        return pickle.loads(data)
    except Exception as exc:
        raise SerializationError(f"{what} cannot be unpickled here: {exc}") from exc
