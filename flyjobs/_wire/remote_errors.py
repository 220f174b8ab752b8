"""Exceptions as they travel from a machine: captured there, rebuilt (or described) here.

Imported by the worker runtime: standard library and msgpack only at import time.

On the wire (inside a result envelope)::

    {"type": "module.qualname", "module": str, "message": str, "traceback": str,
     "causes": [{"type": str, "message": str}], "args": bytes | None, "attrs": bytes | None,
     "stage": "import" | "arguments" | "call" | "result" | "payload" | "code"}
"""

from __future__ import annotations

from flyjobs._exceptions import RemoteError, SerializationError
from flyjobs._wire.codec import decode_value, encode_value, import_reference, type_name
from flyjobs._wire.framing import dumps_pickle, field, loads_pickle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("ErrorInfo", "describe_exception", "is_remote", "rebuild_exception")

_MAX_CAUSES = 16


class ErrorInfo:
    """An exception as it travels from the worker: what is needed to re-raise it here.

    :ivar type: ``module.qualname`` of the exception class (just the name for builtins).
    :ivar module: the module to import the class from.
    :ivar message: ``str(exc)``.
    :ivar traceback: the formatted remote traceback, chained causes included.
    :ivar causes: ``{"type", "message"}`` of each ``__cause__``/``__context__``, nearest first.
    :ivar args_data: the encoded ``exc.args`` (or the pickled exception), None if not encodable.
    :ivar attrs_data: the encoded instance attributes that could be encoded, or None.
    :ivar stage: where it happened: ``import``, ``arguments``, ``call`` or ``result``
        (or ``payload``: the worker refused the call's payload unread).
    """

    __slots__ = (
        "args_data",
        "attrs_data",
        "causes",
        "message",
        "module",
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
        attrs_data: bytes | None = None,
    ) -> None:
        self.type = type
        self.module = module
        self.message = message
        self.traceback = traceback
        self.causes = causes
        self.args_data = args_data
        self.attrs_data = attrs_data
        self.stage = stage

    def to_wire(self) -> dict[str, Any]:
        """The map the result envelope carries."""
        return {
            "type": self.type,
            "module": self.module,
            "message": self.message,
            "traceback": self.traceback,
            "causes": self.causes,
            "args": self.args_data,
            "attrs": self.attrs_data,
            "stage": self.stage,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> ErrorInfo:
        """Read the map `to_wire` made; imports nothing.

        :raises SerializationError: a field is missing or malformed.
        """
        causes = field(wire, "causes", list)
        if not all(isinstance(c, dict) for c in causes):
            raise SerializationError("flyjobs envelope field 'causes' is malformed")
        return cls(
            type=field(wire, "type", str),
            module=field(wire, "module", str),
            message=field(wire, "message", str),
            traceback=field(wire, "traceback", str),
            causes=[{"type": str(c.get("type")), "message": str(c.get("message"))} for c in causes],
            args_data=field(wire, "args", (bytes, type(None))),
            attrs_data=field(wire, "attrs", (bytes, type(None))),
            stage=field(wire, "stage", str),
        )

    def __repr__(self) -> str:
        return f"<ErrorInfo {self.stage}: {self.type}: {self.message[:80]!r}>"


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
        causes.append({"type": type_name(type(nxt)), "message": str(nxt)})
        current = nxt
    return causes


def _encode_attrs(exc: BaseException) -> bytes | None:
    """The instance attributes of `exc` that can be encoded (a class whose ``__init__`` does
    not take its ``args`` back is rebuilt from them)."""
    attrs = {}
    for name, value in getattr(exc, "__dict__", {}).items():
        if name.startswith("__"):
            continue
        try:
            encode_value(value)
        except SerializationError:
            continue
        attrs[name] = value
    return encode_value(attrs) if attrs else None


def describe_exception(exc: BaseException, *, stage: str, pickle: bool = False) -> ErrorInfo:
    """Capture `exc` (type, message, formatted traceback, cause chain, args) for the trip.

    :param stage: where it happened: ``import``, ``arguments``, ``call`` or ``result``
        (or ``payload``: the worker refused the call's payload unread).
    :param pickle: carry the exception itself as pickle instead of its msgpack-encoded args.
    """
    import traceback  # lazy: keeps machines light

    args_data: bytes | None
    attrs_data: bytes | None = None
    try:
        if pickle:
            args_data = dumps_pickle(exc, "the exception")
        else:
            args_data = encode_value(exc.args, where="the exception's args")
            attrs_data = _encode_attrs(exc)
    except SerializationError:
        args_data = None
    return ErrorInfo(
        type=type_name(type(exc)),
        module=type(exc).__module__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        causes=_cause_chain(exc),
        args_data=args_data,
        attrs_data=attrs_data,
        stage=stage,
    )


def _from_args(cls: type[Exception], args: tuple[Any, ...]) -> Exception:
    try:
        return cls(*args)
    except Exception:
        # An __init__ that does not take its own args back (two parameters folded into one
        # message): build the instance as pickle would without calling __init__.
        exc = cls.__new__(cls, *args)
        exc.args = args
        return exc


def _rebuild_original(
    error: ErrorInfo, *, pickle: bool, may_import: Callable[[str], bool]
) -> Exception | None:
    if error.args_data is None:
        return None
    try:
        if pickle:
            exc = loads_pickle(error.args_data, "the exception")
            # Only ordinary exceptions are rebuilt: a remote SystemExit or KeyboardInterrupt
            # must not stop this process.
            return exc if isinstance(exc, Exception) else None
        qualname = error.type.removeprefix(f"{error.module}.")
        cls = import_reference(f"{error.module}:{qualname}", may_import=may_import)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            return None
        args = decode_value(error.args_data, may_import=may_import)
        if not isinstance(args, tuple):
            return None
        exc = _from_args(cls, args)
        if error.attrs_data is not None:
            attrs = decode_value(error.attrs_data, may_import=may_import)
            if isinstance(attrs, dict):
                vars(exc).update({k: v for k, v in attrs.items() if isinstance(k, str)})
    except Exception:
        return None
    return exc


def rebuild_exception(
    error: ErrorInfo, *, pickle: bool, may_import: Callable[[str], bool]
) -> Exception:
    """The exception to raise here for a remote error.

    The function's own exception type is rebuilt when its class is an `Exception` that can be
    found here (a module not imported yet only if ``may_import(module)``) and built from its
    args (or, when its ``__init__`` refuses them, without calling it, with its attributes
    restored). The remote traceback is attached as the ``remote_traceback`` attribute and as a
    note. Otherwise, and always for a `BaseException` that is not an `Exception` (a remote
    ``KeyboardInterrupt`` must not interrupt this process), the result is a `RemoteError`
    carrying the type name, message and traceback.

    :param pickle: the call travels as pickle (the call's own option, never the envelope's).
    """
    exc = _rebuild_original(error, pickle=pickle, may_import=may_import)
    if exc is None:
        return RemoteError(error.type, error.message, error.traceback)
    try:
        exc.remote_traceback = error.traceback  # type: ignore[attr-defined]
    except AttributeError:
        pass
    exc.add_note(f"Remote traceback:\n{error.traceback.rstrip()}")
    return exc


def is_remote(exc: BaseException) -> bool:
    """Whether ``exc`` came from a machine (it carries its ``remote_traceback``).

    Where a call's error reaches its caller, a remote one is raised as
    ``exc.with_traceback(None)``: the frames of the machinery that brought it here (the
    runtime's loop, anyio, futures) say nothing to the caller, whose traceback then goes from
    their own call to the ``Remote traceback:`` note, as a local call's would. Any other error
    keeps its frames: they locate a failure of flyjobs itself.
    """
    return isinstance(getattr(exc, "remote_traceback", None), str)
