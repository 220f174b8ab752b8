"""The result envelope: a call's value or exception as it travels back (a msgpack map).

Imported by the worker runtime: standard library and msgpack only at import time.

::

    {"flyjobs": 2, "call_id": str, "ok": bool,
     "value": bytes | None,       # encode_value(value), or its pickle, when ok
     "error": None | {...},       # see flyjobs._wire.remote_errors
     "stdout_tail": str, "stderr_tail": str,  # what the call printed (tails)
     "timings": {"worker_start" | "import_start" | "import_end" | "function_start" |
                 "function_end" | "deliver_start": float (unix s)}}

Whether the value is a pickle is the call's own option, never something the envelope says: a
delivery cannot make the caller unpickle (see docs/threat-model.md).
"""

from __future__ import annotations

from flyjobs._exceptions import SerializationError
from flyjobs._wire.codec import decode_value, encode_value, pack
from flyjobs._wire.framing import ENVELOPE_VERSION, dumps_pickle, field, loads_pickle, read_envelope
from flyjobs._wire.remote_errors import ErrorInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = ("ResultEnvelope", "decode_result", "encode_result")


class ResultEnvelope:
    """A call's result as the worker delivered it.

    :ivar call_id: the call's id.
    :ivar ok: True if the function returned; then `value` decodes what it returned.
    :ivar error: the exception, if not `ok`; `flyjobs._wire.remote_errors.rebuild_exception` turns
        it into one to raise.
    :ivar stdout_tail: the end of what the call printed to stdout (at most 64 Ki characters).
    :ivar stderr_tail: the end of what it printed to stderr.
    :ivar timings: unix times (s) of the machine's clock, those the call reached:
        ``worker_start`` (the worker process), ``import_start``/``import_end`` (importing the
        function: absent when the machine had imported it for an earlier call), ``function_start``/
        ``function_end``, ``deliver_start`` (encoding the result began).
    :ivar value_data: the encoded value (None unless `ok`).
    """

    __slots__ = ("call_id", "error", "ok", "stderr_tail", "stdout_tail", "timings", "value_data")

    def __init__(
        self,
        *,
        call_id: str,
        ok: bool,
        value_data: bytes | None,
        error: ErrorInfo | None,
        stdout_tail: str,
        stderr_tail: str,
        timings: dict[str, float],
    ) -> None:
        self.call_id = call_id
        self.ok = ok
        self.value_data = value_data
        self.error = error
        self.stdout_tail = stdout_tail
        self.stderr_tail = stderr_tail
        self.timings = timings

    def value(self, *, pickle: bool, may_import: Callable[[str], bool] | None = None) -> Any:
        """The returned value, decoded by the call's own options.

        :param pickle: the call opted in to pickle (unpickle only an authenticated result).
        :param may_import: which modules not imported yet a class in the value may import
            (see `flyjobs._wire.codec.import_reference`).
        :raises SerializationError: the call did not return a value, or it cannot be rebuilt
            here (for example its class is not importable).
        """
        if not self.ok or self.value_data is None:
            raise SerializationError(f"call {self.call_id} did not return a value")
        if pickle:
            return loads_pickle(self.value_data, "the result")
        return decode_value(self.value_data, where="the result", may_import=may_import)

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"error {self.error!r}"
        return f"<ResultEnvelope {self.call_id} {state}>"


def encode_result(
    call_id: str,
    *,
    value: object = None,
    error: ErrorInfo | None = None,
    stdout_tail: str = "",
    stderr_tail: str = "",
    timings: Mapping[str, float] | None = None,
    pickle: bool = False,
) -> bytes:
    """Encode a result envelope: `value` if `error` is None, else the error.

    :param pickle: the call opted in to pickle: the value travels as one.
    :raises SerializationError: `value` cannot be encoded (the message names where inside it).
    """
    value_data = None
    if error is None:
        if pickle:
            value_data = dumps_pickle(value, "the result")
        else:
            value_data = encode_value(value, where="the result")
    return pack(
        {
            "flyjobs": ENVELOPE_VERSION,
            "call_id": call_id,
            "ok": error is None,
            "value": value_data,
            "error": None if error is None else error.to_wire(),
            "stdout_tail": stdout_tail,
            "stderr_tail": stderr_tail,
            "timings": dict(timings or {}),
        }
    )


def decode_result(data: bytes) -> ResultEnvelope:
    """Decode a result envelope; the value stays encoded until `ResultEnvelope.value`.

    Imports nothing named in the payload, so it is safe to run on any delivered body.

    :raises SerializationError: the data is not a flyjobs result envelope of this version.
    """
    envelope = read_envelope(data, "result")
    ok = field(envelope, "ok", bool)
    wire_error = envelope.get("error")
    if ok == (wire_error is not None) or not isinstance(wire_error, (dict, type(None))):
        raise SerializationError("flyjobs result envelope has a malformed 'error' field")
    timings = field(envelope, "timings", dict)
    if not all(isinstance(t, (int, float)) for t in timings.values()):
        raise SerializationError("flyjobs result envelope has a malformed 'timings' field")
    return ResultEnvelope(
        call_id=field(envelope, "call_id", str),
        ok=ok,
        value_data=field(envelope, "value", bytes) if ok else None,
        error=None if wire_error is None else ErrorInfo.from_wire(wire_error),
        stdout_tail=field(envelope, "stdout_tail", str),
        stderr_tail=field(envelope, "stderr_tail", str),
        timings={str(k): float(v) for k, v in timings.items()},
    )
