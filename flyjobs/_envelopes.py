"""The envelopes that carry a call to a machine and its result back (msgpack maps).

Imported by the worker runtime too: standard library and msgpack only at import time.

Call envelope (``arguments`` is a nested blob so that the header can be read, and ``sys_path``
applied, before any class named in the arguments is imported)::

    {"flyjobs": 1, "call_id": str, "fn": "module:qualname", "deadline": float (unix s),
     "result_url": str, "batch_id": str | None, "sys_path": [str], "pickle": bool,
     "arguments": bytes,          # encode_value([args, kwargs]), or pickle of (args, kwargs)
     "arguments_url": str | None} # if set, `arguments` is empty: GET them there (they were over
                                  # the inline limit and spilled to the object store)

Result envelope::

    {"flyjobs": 1, "call_id": str, "ok": bool, "pickle": bool,
     "value": bytes | None,       # encode_value(value) (or pickle) when ok
     "error": None | {"type": "module.qualname", "module": str, "message": str,
                      "traceback": str, "causes": [{"type": str, "message": str}],
                      "args": bytes | None, "stage": "import" | "arguments" | "call" | "result"},
     "stdout_tail": str, "stderr_tail": str,  # what the call printed (tails)
     "timings": {"worker_start" | "function_start" | "function_end": float (unix s)}}
"""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]

from flyjobs._codec import (
    _import_ref,
    _locate,
    _pack,
    _type_name,
    _Unencodable,
    decode_value,
    encode_value,
)
from flyjobs._exceptions import RemoteError, SerializationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

__all__ = (
    "ENVELOPE_VERSION",
    "CallEnvelope",
    "ErrorInfo",
    "ResultEnvelope",
    "decode_call",
    "decode_result",
    "describe_exception",
    "encode_arguments",
    "encode_call",
    "encode_result",
    "rebuild_exception",
)

#: Version of the envelope layout; a payload of another version is refused.
ENVELOPE_VERSION = 1

_PICKLE_PROTOCOL = 5
_MAX_CAUSES = 16


# --- call envelope ------------------------------------------------------------------------


class CallEnvelope:
    """One call as the worker reads it.

    :ivar call_id: the call's id.
    :ivar fn: the function's ``module:qualname`` reference.
    :ivar deadline: unix time (s) after which the worker stops the call.
    :ivar result_url: where the worker PUTs the result envelope.
    :ivar batch_id: the batch the call belongs to, if any.
    :ivar sys_path: import roots to put in front of ``sys.path`` before importing anything.
    :ivar pickle: whether arguments and result travel as pickle.
    :ivar arguments_data: the encoded ``(args, kwargs)``; decode them with `arguments`.
    :ivar arguments_url: where to GET `arguments_data` instead, when it was too large to travel
        in the payload (empty until then).
    """

    __slots__ = (
        "arguments_data",
        "arguments_url",
        "batch_id",
        "call_id",
        "deadline",
        "fn",
        "pickle",
        "result_url",
        "sys_path",
    )

    def __init__(
        self,
        *,
        call_id: str,
        fn: str,
        deadline: float,
        result_url: str,
        batch_id: str | None,
        sys_path: list[str],
        pickle: bool,
        arguments_data: bytes,
        arguments_url: str | None = None,
    ) -> None:
        self.call_id = call_id
        self.fn = fn
        self.deadline = deadline
        self.result_url = result_url
        self.batch_id = batch_id
        self.sys_path = sys_path
        self.pickle = pickle
        self.arguments_data = arguments_data
        self.arguments_url = arguments_url

    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode ``(args, kwargs)``, importing the classes they name (apply `sys_path` first).

        :raises SerializationError: corrupt data, or a class cannot be imported here.
        """
        if self.pickle:
            decoded = _unpickle(self.arguments_data, "the arguments")
        else:
            decoded = decode_value(self.arguments_data, where="the arguments")
        if (
            not isinstance(decoded, (list, tuple))
            or len(decoded) != 2
            or not isinstance(decoded[0], (list, tuple))
            or not isinstance(decoded[1], dict)
        ):
            raise SerializationError("the arguments are not an (args, kwargs) pair")
        return tuple(decoded[0]), decoded[1]

    def __repr__(self) -> str:
        return f"<CallEnvelope {self.call_id} {self.fn} deadline={self.deadline:.3f}>"


def _argument_label(index: int, arg_names: Sequence[str]) -> str:
    if index < len(arg_names):
        return f"argument {arg_names[index]!r}"
    return f"positional argument {index}"


def encode_arguments(
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    pickle: bool = False,
    arg_names: Sequence[str] = (),
) -> bytes:
    """Encode a call's arguments into the blob a call envelope carries (see `encode_call`).

    :param pickle: use pickle (only when the user opted in).
    :param arg_names: names of the positional parameters, used only in error messages.
    :raises SerializationError: an argument cannot be encoded; the message names it and where
        inside it the offending value sits.
    """
    kwargs = {} if kwargs is None else kwargs
    if pickle:
        return _pickle((tuple(args), dict(kwargs)), "the arguments")
    try:
        return _pack([list(args), dict(kwargs)])
    except _Unencodable as exc:
        labelled = [(_argument_label(i, arg_names), a) for i, a in enumerate(args)]
        labelled += [(f"argument {name!r}", value) for name, value in kwargs.items()]
        for label, value in labelled:
            path = _locate(value, exc.obj)
            if path is not None:
                raise SerializationError(f"{label}{path} {exc.reason}") from None
        raise SerializationError(f"an argument {exc.reason}") from None
    except (ValueError, OverflowError) as exc:
        raise SerializationError(
            f"the arguments cannot be encoded ({exc}); they are nested too deeply or hold a cycle"
        ) from exc


def encode_call(
    fn: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    call_id: str,
    deadline: float,
    result_url: str,
    batch_id: str | None = None,
    sys_path: Sequence[str] = (),
    pickle: bool = False,
    arg_names: Sequence[str] = (),
    arguments: bytes | None = None,
    arguments_url: str | None = None,
) -> bytes:
    """Encode a call into the payload a machine's worker reads.

    :param fn: the ``module:qualname`` reference (see `function_reference`).
    :param deadline: unix time (s) after which the worker stops the call.
    :param result_url: where the worker PUTs the result.
    :param sys_path: import roots the worker puts in front of ``sys.path``.
    :param pickle: carry arguments and result as pickle (only when the user opted in).
    :param arg_names: names of the positional parameters, used only in error messages.
    :param arguments: the blob `encode_arguments` made, instead of ``args``/``kwargs`` (a
        caller that checked the arguments early need not encode them twice).
    :param arguments_url: a URL the worker GETs the encoded arguments from instead (then
        `arguments` must be ``b""``).
    :raises SerializationError: an argument cannot be encoded; the message names it and where
        inside it the offending value sits.
    """
    if arguments is None:
        arguments = encode_arguments(args, kwargs, pickle=pickle, arg_names=arg_names)
    return _pack(
        {
            "flyjobs": ENVELOPE_VERSION,
            "call_id": call_id,
            "fn": fn,
            "deadline": float(deadline),
            "result_url": result_url,
            "batch_id": batch_id,
            "sys_path": list(sys_path),
            "pickle": pickle,
            "arguments": arguments,
            "arguments_url": arguments_url,
        }
    )


def _read_envelope(data: bytes, kind: str) -> dict[str, Any]:
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


def _field(envelope: dict[str, Any], name: str, kinds: type | tuple[type, ...]) -> Any:
    value = envelope.get(name)
    if not isinstance(value, kinds):
        raise SerializationError(f"flyjobs envelope field {name!r} is missing or malformed")
    return value


def decode_call(data: bytes) -> CallEnvelope:
    """Decode a call payload's header; the arguments stay encoded until `CallEnvelope.arguments`.

    :raises SerializationError: the data is not a flyjobs call envelope of this version.
    """
    envelope = _read_envelope(data, "call")
    sys_path = _field(envelope, "sys_path", list)
    if not all(isinstance(entry, str) for entry in sys_path):
        raise SerializationError("flyjobs envelope field 'sys_path' is malformed")
    return CallEnvelope(
        call_id=_field(envelope, "call_id", str),
        fn=_field(envelope, "fn", str),
        deadline=float(_field(envelope, "deadline", (int, float))),
        result_url=_field(envelope, "result_url", str),
        batch_id=_field(envelope, "batch_id", (str, type(None))),
        sys_path=sys_path,
        pickle=_field(envelope, "pickle", bool),
        arguments_data=_field(envelope, "arguments", bytes),
        arguments_url=_field(envelope, "arguments_url", (str, type(None))),
    )


def _pickle(obj: object, what: str) -> bytes:
    import pickle

    try:
        return pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)
    except Exception as exc:
        raise SerializationError(f"{what} cannot be pickled: {exc}") from exc


def _unpickle(data: bytes, what: str) -> Any:
    import pickle

    try:
        return pickle.loads(data)
    except Exception as exc:
        raise SerializationError(f"{what} cannot be unpickled here: {exc}") from exc


# --- result envelope ----------------------------------------------------------------------


class ErrorInfo:
    """An exception as it travels from the worker: what is needed to re-raise it here.

    :ivar type: ``module.qualname`` of the exception class (just the name for builtins).
    :ivar module: the module to import the class from.
    :ivar message: ``str(exc)``.
    :ivar traceback: the formatted remote traceback, chained causes included.
    :ivar causes: ``{"type", "message"}`` of each ``__cause__``/``__context__``, nearest first.
    :ivar args_data: the encoded ``exc.args`` (or the pickled exception), None if not encodable.
    :ivar stage: where it happened: ``import``, ``arguments``, ``call`` or ``result``.
    :ivar pickled: whether `args_data` is a pickle.
    """

    __slots__ = (
        "args_data",
        "causes",
        "message",
        "module",
        "pickled",
        "stage",
        "traceback",
        "type",
    )

    def __init__(
        self,
        *,
        type: str,
        module: str,
        message: str,
        traceback: str,
        causes: list[dict[str, str]],
        args_data: bytes | None,
        stage: str,
        pickled: bool = False,
    ) -> None:
        self.type = type
        self.module = module
        self.message = message
        self.traceback = traceback
        self.causes = causes
        self.args_data = args_data
        self.stage = stage
        self.pickled = pickled

    def __repr__(self) -> str:
        return f"<ErrorInfo {self.stage}: {self.type}: {self.message[:80]!r}>"


class ResultEnvelope:
    """A call's result as the worker delivered it.

    :ivar call_id: the call's id.
    :ivar ok: True if the function returned; then `value` is what it returned.
    :ivar error: the exception, if not `ok`; `rebuild_exception` turns it into one to raise.
    :ivar stdout_tail: the end of what the call printed to stdout (at most 64 Ki characters).
    :ivar stderr_tail: the end of what it printed to stderr.
    :ivar timings: unix times (s): ``worker_start``, ``function_start``, ``function_end``
        (those the call reached).
    :ivar pickled: whether the value travels as pickle.
    :ivar value_data: the encoded value (None unless `ok`).
    """

    __slots__ = (
        "call_id",
        "error",
        "ok",
        "pickled",
        "stderr_tail",
        "stdout_tail",
        "timings",
        "value_data",
    )

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
        pickled: bool,
    ) -> None:
        self.call_id = call_id
        self.ok = ok
        self.value_data = value_data
        self.error = error
        self.stdout_tail = stdout_tail
        self.stderr_tail = stderr_tail
        self.timings = timings
        self.pickled = pickled

    @property
    def value(self) -> Any:
        """The returned value, decoded on each access (importing the classes it names).

        :raises SerializationError: the call did not return a value, or it cannot be rebuilt
            here (for example its class is not importable).
        """
        if not self.ok or self.value_data is None:
            raise SerializationError(f"call {self.call_id} did not return a value")
        if self.pickled:
            return _unpickle(self.value_data, "the result")
        return decode_value(self.value_data, where="the result")

    def unwrap(self) -> Any:
        """The returned value, or raise the call's exception (see `rebuild_exception`)."""
        if self.error is not None:
            raise rebuild_exception(self.error)
        return self.value

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"error {self.error!r}"
        return f"<ResultEnvelope {self.call_id} {state}>"


def _cause_chain(exc: BaseException) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    seen = {id(exc)}
    current: BaseException | None = exc
    while current is not None and len(causes) < _MAX_CAUSES:
        nxt = current.__cause__
        if nxt is None and not current.__suppress_context__:
            nxt = current.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        causes.append({"type": _type_name(type(nxt)), "message": str(nxt)})
        current = nxt
    return causes


def describe_exception(exc: BaseException, *, stage: str, pickle: bool = False) -> ErrorInfo:
    """Capture `exc` (type, message, formatted traceback, cause chain, args) for the trip.

    :param stage: where it happened: ``import``, ``arguments``, ``call`` or ``result``.
    :param pickle: carry the exception itself as pickle instead of its msgpack-encoded args.
    """
    import traceback

    args_data: bytes | None
    try:
        if pickle:
            args_data = _pickle(exc, "the exception")
        else:
            args_data = encode_value(exc.args, where="the exception's args")
    except SerializationError:
        args_data = None
    return ErrorInfo(
        type=_type_name(type(exc)),
        module=type(exc).__module__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        causes=_cause_chain(exc),
        args_data=args_data,
        stage=stage,
        pickled=pickle,
    )


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

    :raises SerializationError: `value` cannot be encoded (the message names where inside it).
    """
    value_data = None
    if error is None:
        if pickle:
            value_data = _pickle(value, "the result")
        else:
            value_data = encode_value(value, where="the result")
    wire_error = None
    if error is not None:
        wire_error = {
            "type": error.type,
            "module": error.module,
            "message": error.message,
            "traceback": error.traceback,
            "causes": error.causes,
            "args": error.args_data,
            "stage": error.stage,
        }
    return _pack(
        {
            "flyjobs": ENVELOPE_VERSION,
            "call_id": call_id,
            "ok": error is None,
            "pickle": pickle,
            "value": value_data,
            "error": wire_error,
            "stdout_tail": stdout_tail,
            "stderr_tail": stderr_tail,
            "timings": dict(timings or {}),
        }
    )


def _decode_error(wire: dict[str, Any], pickled: bool) -> ErrorInfo:
    causes = _field(wire, "causes", list)
    return ErrorInfo(
        type=_field(wire, "type", str),
        module=_field(wire, "module", str),
        message=_field(wire, "message", str),
        traceback=_field(wire, "traceback", str),
        causes=[{"type": str(c.get("type")), "message": str(c.get("message"))} for c in causes],
        args_data=_field(wire, "args", (bytes, type(None))),
        stage=_field(wire, "stage", str),
        pickled=pickled,
    )


def decode_result(data: bytes) -> ResultEnvelope:
    """Decode a result envelope; the value stays encoded until `ResultEnvelope.value`.

    Imports nothing named in the payload, so it is safe to run on any delivered body.

    :raises SerializationError: the data is not a flyjobs result envelope of this version.
    """
    envelope = _read_envelope(data, "result")
    ok = _field(envelope, "ok", bool)
    pickled = _field(envelope, "pickle", bool)
    wire_error = envelope.get("error")
    if ok == (wire_error is not None) or not isinstance(wire_error, (dict, type(None))):
        raise SerializationError("flyjobs result envelope has a malformed 'error' field")
    timings = _field(envelope, "timings", dict)
    if not all(isinstance(t, (int, float)) for t in timings.values()):
        raise SerializationError("flyjobs result envelope has a malformed 'timings' field")
    return ResultEnvelope(
        call_id=_field(envelope, "call_id", str),
        ok=ok,
        value_data=_field(envelope, "value", bytes) if ok else None,
        error=None if wire_error is None else _decode_error(wire_error, pickled),
        stdout_tail=_field(envelope, "stdout_tail", str),
        stderr_tail=_field(envelope, "stderr_tail", str),
        timings={str(k): float(v) for k, v in timings.items()},
        pickled=pickled,
    )


def _rebuild_original(error: ErrorInfo) -> BaseException | None:
    if error.args_data is None:
        return None
    try:
        if error.pickled:
            exc = _unpickle(error.args_data, "the exception")
        else:
            qualname = error.type.removeprefix(f"{error.module}.")
            cls = _import_ref(f"{error.module}:{qualname}")
            args = decode_value(error.args_data)
            exc = cls(*args) if isinstance(cls, type) and issubclass(cls, Exception) else None
    except Exception:
        return None
    # Only ordinary exceptions are rebuilt: a remote SystemExit or KeyboardInterrupt must not
    # stop this process.
    return exc if isinstance(exc, Exception) else None


def rebuild_exception(error: ErrorInfo) -> BaseException:
    """The exception to raise for a remote error.

    The function's own exception type is rebuilt when its class can be imported here and built
    from its args; the remote traceback is attached as the ``remote_traceback`` attribute and as
    a note. Otherwise (or for exceptions that are not `Exception` subclasses) the result is a
    `RemoteError` carrying the type name, message and traceback.
    """
    exc = _rebuild_original(error)
    if exc is None:
        return RemoteError(error.type, error.message, error.traceback)
    try:
        exc.remote_traceback = error.traceback  # type: ignore[attr-defined]
    except AttributeError:
        pass
    exc.add_note(f"Remote traceback:\n{error.traceback.rstrip()}")
    return exc
