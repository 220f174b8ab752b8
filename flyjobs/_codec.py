"""The payload codec: the msgpack envelopes that carry a call to a machine and its result back.

Imported by the worker runtime, whose import time every call pays, so at import time this module
uses only the standard library modules msgpack loads anyway. Everything else (``decimal``,
``uuid``, ``zoneinfo``, ``pickle``, ``traceback``, ...) is imported when a value needs it.

Values
    `encode_value` packs plain data with msgpack. What msgpack cannot carry natively travels as
    msgpack extension types and comes back as the same type: tuple, set, frozenset, ints beyond
    64 bits, datetime (naive or aware; `datetime.timezone` and `zoneinfo.ZoneInfo` zones are
    kept, any other tzinfo becomes the fixed offset it had at that instant), date, time,
    timedelta, Decimal, UUID, complex, pathlib paths, Enum members, named tuples, dataclass
    instances (their fields are restored onto a new instance without calling ``__init__``, as
    pickle does) and pydantic models (rebuilt with ``Cls.model_validate``). Classes travel as a
    ``module:qualname`` reference and are imported again on the other side. Dict keys keep their
    types. Subclasses of str, int, float, bytes, list and dict arrive as the base type, and
    bytearray and memoryview as bytes. Anything else raises `SerializationError` naming where
    the value sits, unless the call opted in to pickle.

Call envelope (a msgpack map; ``arguments`` is a nested blob so that the header can be read, and
``sys_path`` applied, before any class named in the arguments is imported)::

    {"flyjobs": 1, "call_id": str, "fn": "module:qualname", "deadline": float (unix s),
     "result_url": str, "batch_id": str | None, "sys_path": [str], "pickle": bool,
     "arguments": bytes}          # encode_value([args, kwargs]), or pickle of (args, kwargs)

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

import os
import reprlib
import sys
from datetime import UTC, date, datetime, time, timedelta, timezone

import msgpack  # type: ignore[import-untyped]

from flyjobs._exceptions import RemoteError, SerializationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

__all__ = (
    "ENVELOPE_VERSION",
    "CallEnvelope",
    "ErrorInfo",
    "ResultEnvelope",
    "decode_call",
    "decode_result",
    "decode_value",
    "describe_exception",
    "encode_call",
    "encode_result",
    "encode_value",
    "function_reference",
    "rebuild_exception",
)

#: Version of the envelope layout; a payload of another version is refused.
ENVELOPE_VERSION = 1

_PICKLE_PROTOCOL = 5
_MAX_CAUSES = 16

# Extension type codes. They are part of the wire format: never renumber one.
_EXT_TUPLE = 1
_EXT_SET = 2
_EXT_FROZENSET = 3
_EXT_BIGINT = 4
_EXT_DATETIME = 5
_EXT_DATE = 6
_EXT_TIME = 7
_EXT_TIMEDELTA = 8
_EXT_DECIMAL = 9
_EXT_UUID = 10
_EXT_COMPLEX = 11
_EXT_DATACLASS = 12
_EXT_MODEL = 13
_EXT_ENUM = 14
_EXT_NAMEDTUPLE = 15
_EXT_PATH = 16

_NOT_SERIALIZABLE = "is not serializable by flyjobs; pass plain data, or opt in with pickle=True"


class _Unencodable(Exception):
    """Raised inside msgpack's ``default`` hook; turned into a located SerializationError."""

    def __init__(self, obj: object, reason: str = "") -> None:
        super().__init__(reason)
        self.obj = obj
        self.reason = reason or f"of type {_type_name(type(obj))} {_NOT_SERIALIZABLE}"


# --- values -------------------------------------------------------------------------------


def _pack(obj: object) -> bytes:
    # strict_types makes msgpack hand every tuple and every subclass of a native type to
    # `_default`, so that tuples stay tuples and IntEnum members stay members.
    data: bytes = msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)
    return data


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def encode_value(value: object, *, where: str = "value") -> bytes:
    """Encode one value (see the module docstring for what round-trips).

    :param where: how to name the value in an error message (``"result"``, ``"argument 'x'"``).
    :raises SerializationError: the value, or something inside it, cannot be encoded; the
        message says where it sits (``argument 'x' [2]['k'] of type socket ...``).
    """
    try:
        return _pack(value)
    except _Unencodable as exc:
        path = _locate(value, exc.obj)
        raise SerializationError(f"{where}{path or ''} {exc.reason}") from None
    except (ValueError, OverflowError) as exc:
        raise SerializationError(
            f"{where} cannot be encoded ({exc}); it is nested too deeply or holds a cycle"
        ) from exc


def decode_value(data: bytes, *, where: str = "value") -> Any:
    """Decode what `encode_value` produced, importing the classes it names.

    :raises SerializationError: the data is corrupt or a class it names cannot be imported
        here (then ``__cause__`` is the ImportError).
    """
    try:
        return _unpack(data)
    except SerializationError as exc:
        raise SerializationError(f"{where}: {exc}") from exc.__cause__
    except Exception as exc:
        raise SerializationError(f"{where} is not valid flyjobs data: {exc}") from exc


def _default(obj: Any) -> Any:
    encoder = _ENCODERS.get(type(obj))
    if encoder is None:
        encoder = _find_encoder(obj)
    return encoder(obj)


def _find_encoder(obj: object) -> Callable[[Any], Any]:
    cls = type(obj)
    enum = sys.modules.get("enum")
    if enum is not None and isinstance(obj, enum.Enum):
        return _encode_enum
    if hasattr(cls, "__dataclass_fields__"):
        return _encode_dataclass
    # pydantic is recognised by its API, so that this module never imports it.
    if hasattr(cls, "model_validate") and hasattr(cls, "model_dump"):
        return _encode_model
    if isinstance(obj, tuple) and hasattr(cls, "_fields"):
        return _encode_namedtuple
    # A Decimal, UUID or path can only exist if its module was imported; looking it up in
    # sys.modules keeps those imports out of the worker's cold start.
    for module, name, encoder in _LAZY_ENCODERS:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(obj, getattr(loaded, name)):
            return encoder
    for base, encoder in _BASE_ENCODERS:
        if isinstance(obj, base):
            return encoder
    raise _Unencodable(obj)


def _ext(code: int, obj: object) -> msgpack.ExtType:
    return msgpack.ExtType(code, _pack(obj))


def _encode_int(obj: int) -> object:
    if -(2**63) <= obj < 2**64:
        return obj
    return msgpack.ExtType(
        _EXT_BIGINT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True)
    )


def _encode_tz(tz: Any, moment: datetime | None) -> object:
    if tz is None:
        return None
    if type(tz) is timezone:
        offset = tz.utcoffset(None)
        return ["o", offset // timedelta(microseconds=1), tz.tzname(None)]
    key = getattr(tz, "key", None)
    if type(tz).__module__ == "zoneinfo" and isinstance(key, str):
        return ["z", key]
    offset = tz.utcoffset(moment)
    if offset is None:
        return None
    return ["o", offset // timedelta(microseconds=1), tz.tzname(moment)]


def _encode_datetime(obj: datetime) -> object:
    tz = _encode_tz(obj.tzinfo, obj)
    fields = [obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second]
    return _ext(_EXT_DATETIME, [*fields, obj.microsecond, obj.fold, tz])


def _encode_time(obj: time) -> object:
    tz = _encode_tz(obj.tzinfo, None)
    return _ext(_EXT_TIME, [obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold, tz])


def _class_ref(obj: object) -> str:
    """The ``module:qualname`` of `obj`'s class; _Unencodable if no other side can import it."""
    cls = type(obj)
    module = cls.__module__
    if "<locals>" in cls.__qualname__:
        raise _Unencodable(
            obj,
            f"is an instance of {module}.{cls.__qualname__}, a class defined inside a function; "
            "move the class to module top level so the other side can import it",
        )
    if module == "__main__":
        alias = _main_module_name()
        if alias is None:
            raise _Unencodable(
                obj,
                f"is an instance of {cls.__qualname__}, defined in an interactive session; "
                "move the class into a module (.py file) and import it",
            )
        module = alias
    return f"{module}:{cls.__qualname__}"


def _encode_enum(obj: Any) -> object:
    return _ext(_EXT_ENUM, [_class_ref(obj), obj.value])


def _encode_dataclass(obj: Any) -> object:
    import dataclasses

    state = {}
    for field in dataclasses.fields(obj):
        if hasattr(obj, field.name):
            state[field.name] = getattr(obj, field.name)
    return _ext(_EXT_DATACLASS, [_class_ref(obj), state])


def _encode_model(obj: Any) -> object:
    return _ext(_EXT_MODEL, [_class_ref(obj), obj.model_dump(mode="python", by_alias=True)])


def _encode_namedtuple(obj: Any) -> object:
    return _ext(_EXT_NAMEDTUPLE, [_class_ref(obj), list(obj)])


def _encode_path(obj: Any) -> object:
    return _ext(_EXT_PATH, [_class_ref(obj), str(obj)])


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    tuple: lambda obj: _ext(_EXT_TUPLE, list(obj)),
    set: lambda obj: _ext(_EXT_SET, list(obj)),
    frozenset: lambda obj: _ext(_EXT_FROZENSET, list(obj)),
    int: _encode_int,
    datetime: _encode_datetime,
    date: lambda obj: _ext(_EXT_DATE, [obj.year, obj.month, obj.day]),
    time: _encode_time,
    timedelta: lambda obj: _ext(_EXT_TIMEDELTA, [obj.days, obj.seconds, obj.microseconds]),
    complex: lambda obj: _ext(_EXT_COMPLEX, [obj.real, obj.imag]),
}

_LAZY_ENCODERS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("decimal", "Decimal", lambda obj: msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())),
    ("uuid", "UUID", lambda obj: msgpack.ExtType(_EXT_UUID, obj.bytes)),
    ("pathlib", "PurePath", _encode_path),
)

# Subclasses of the types above (datetime before date: it is one).
_BASE_ENCODERS: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (int, lambda obj: _encode_int(int(obj))),
    (float, float),
    (str, str.__str__),
    (bytes, bytes),
    (bytearray, bytes),
    (list, list),
    (dict, dict),
    (tuple, _ENCODERS[tuple]),
    (set, _ENCODERS[set]),
    (frozenset, _ENCODERS[frozenset]),
    (datetime, _encode_datetime),
    (date, _ENCODERS[date]),
    (time, _encode_time),
    (timedelta, _ENCODERS[timedelta]),
    (complex, _ENCODERS[complex]),
)


def _ext_hook(code: int, data: bytes) -> Any:
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise SerializationError(f"unknown flyjobs extension type {code}")
    return decoder(data)


def _decode_tz(state: Any) -> Any:
    if state is None:
        return None
    if state[0] == "z":
        import zoneinfo

        return zoneinfo.ZoneInfo(state[1])
    offset, name = timedelta(microseconds=state[1]), state[2]
    if not offset and name == "UTC":
        return UTC
    return timezone(offset, name)


def _decode_datetime(data: bytes) -> datetime:
    year, month, day, hour, minute, second, microsecond, fold, tz = _unpack(data)
    return datetime(
        year, month, day, hour, minute, second, microsecond, tzinfo=_decode_tz(tz), fold=fold
    )


def _decode_time(data: bytes) -> time:
    hour, minute, second, microsecond, fold, tz = _unpack(data)
    return time(hour, minute, second, microsecond, tzinfo=_decode_tz(tz), fold=fold)


def _decode_decimal(data: bytes) -> Any:
    import decimal

    return decimal.Decimal(data.decode())


def _decode_uuid(data: bytes) -> Any:
    import uuid

    return uuid.UUID(bytes=data)


def _import_class(ref: str, kind: str, check: Callable[[Any], bool]) -> Any:
    try:
        cls = _import_ref(ref)
    except Exception as exc:
        raise SerializationError(f"cannot import {kind} {ref} here: {exc}") from exc
    if not isinstance(cls, type) or not check(cls):
        raise SerializationError(f"{ref} is not a {kind}")
    return cls


def _decode_enum(data: bytes) -> Any:
    ref, value = _unpack(data)
    enum = sys.modules.get("enum")
    cls = _import_class(ref, "Enum", lambda c: enum is not None and issubclass(c, enum.Enum))
    return cls(value)


def _decode_dataclass(data: bytes) -> Any:
    ref, state = _unpack(data)
    cls = _import_class(ref, "dataclass", lambda c: hasattr(c, "__dataclass_fields__"))
    obj = cls.__new__(cls)
    # object.__setattr__ also fills frozen and slotted dataclasses.
    for name, value in state.items():
        object.__setattr__(obj, name, value)
    return obj


def _decode_model(data: bytes) -> Any:
    ref, state = _unpack(data)
    cls = _import_class(ref, "pydantic model", lambda c: hasattr(c, "model_validate"))
    try:
        return cls.model_validate(state)
    except Exception as exc:
        raise SerializationError(f"{ref}.model_validate refused the data: {exc}") from exc


def _decode_namedtuple(data: bytes) -> Any:
    ref, items = _unpack(data)
    cls = _import_class(ref, "named tuple", lambda c: issubclass(c, tuple) and hasattr(c, "_make"))
    return cls._make(items)


def _decode_path(data: bytes) -> Any:
    ref, text = _unpack(data)
    import pathlib

    cls = _import_class(ref, "path class", lambda c: issubclass(c, pathlib.PurePath))
    return cls(text)


_DECODERS: dict[int, Callable[[bytes], Any]] = {
    _EXT_TUPLE: lambda data: tuple(_unpack(data)),
    _EXT_SET: lambda data: set(_unpack(data)),
    _EXT_FROZENSET: lambda data: frozenset(_unpack(data)),
    _EXT_BIGINT: lambda data: int.from_bytes(data, "big", signed=True),
    _EXT_DATETIME: _decode_datetime,
    _EXT_DATE: lambda data: date(*_unpack(data)),
    _EXT_TIME: _decode_time,
    _EXT_TIMEDELTA: lambda data: timedelta(*_unpack(data)),
    _EXT_DECIMAL: _decode_decimal,
    _EXT_UUID: _decode_uuid,
    _EXT_COMPLEX: lambda data: complex(*_unpack(data)),
    _EXT_DATACLASS: _decode_dataclass,
    _EXT_MODEL: _decode_model,
    _EXT_ENUM: _decode_enum,
    _EXT_NAMEDTUPLE: _decode_namedtuple,
    _EXT_PATH: _decode_path,
}


def _children(obj: Any) -> list[tuple[str, Any]]:
    """The labelled parts of a container, for naming where an unencodable value sits."""
    if isinstance(obj, dict):
        values = [(f"[{reprlib.repr(key)}]", value) for key, value in obj.items()]
        return values + [(f"<key {reprlib.repr(key)}>", key) for key in obj]
    if isinstance(obj, (list, tuple)) and not hasattr(type(obj), "_fields"):
        return [(f"[{index}]", item) for index, item in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return [(f"<item {reprlib.repr(item)}>", item) for item in obj]
    if hasattr(type(obj), "__dataclass_fields__"):
        return [(f".{name}", getattr(obj, name, None)) for name in obj.__dataclass_fields__]
    fields = getattr(type(obj), "model_fields", None) or getattr(type(obj), "_fields", None)
    if fields:
        return [(f".{name}", getattr(obj, name, None)) for name in fields]
    enum = sys.modules.get("enum")
    if enum is not None and isinstance(obj, enum.Enum):
        return [(".value", obj.value)]
    return []


def _locate(root: object, target: object) -> str | None:
    """The path from `root` to the object `target` (by identity), or None if not found.

    Depth first; each object is searched once, so shared or cyclic structures stay linear.
    """
    seen: set[int] = set()

    def search(node: object) -> str | None:
        if node is target:
            return ""
        if id(node) in seen:
            return None
        seen.add(id(node))
        for label, child in _children(node):
            found = search(child)
            if found is not None:
                return label + found
        return None

    try:
        path = search(root)
    except RecursionError:
        return None
    return None if path is None else (f" {path}" if path else "")


# --- references to functions and classes --------------------------------------------------


def _main_module_name() -> str | None:
    """The name under which another process can import this process's ``__main__`` module."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name != "__main__":
        name: str = spec.name  # run as ``python -m package.module``
        return name
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not path:
        return None
    return os.path.splitext(os.path.basename(path))[0]


def _import_ref(ref: str) -> Any:
    """Import the object a ``module:qualname`` reference names."""
    module_name, _, qualname = ref.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"{ref!r} is not a 'module:qualname' reference")
    module = sys.modules.get(module_name)
    if module is None and module_name == _main_module_name():
        # A class of the script being run comes back under the script's module name: it is
        # this process's __main__, not a second copy of the script.
        module = sys.modules["__main__"]
    if module is None:
        __import__(module_name)
        module = sys.modules[module_name]
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _check_module_attribute(fn: Any, module: str, qualname: str) -> None:
    """Refuse `fn` if its module already binds its name to some other object."""
    if module not in sys.modules:
        return
    try:
        bound = _import_ref(f"{module}:{qualname}")
    except AttributeError:
        # Not bound yet: a decorator runs before the module assigns the name.
        return
    # A decorator's wrapper (``functools.wraps``) may stand at the name: the worker calls it.
    if bound != fn and getattr(bound, "__wrapped__", None) is not fn:
        raise SerializationError(
            f"{module}.{qualname} names another object than the function given, so the worker "
            "would import the wrong thing; give the function a module-level name of its own"
        )


def function_reference(fn: Any) -> tuple[str, list[str]]:
    """The ``module:qualname`` reference a worker imports to run `fn`, and extra import roots.

    A function of a script run as ``python path/hello.py`` lives in ``__main__``; it is named
    after the script (``hello:square``) and the script's absolute directory is returned as an
    import root for the worker's ``sys.path``. Otherwise the list of roots is empty.

    :param fn: a function at module top level (or the ``functools.wraps`` wrapper bound to
        its name; the worker calls whatever the name is bound to).
    :raises SerializationError: `fn` is a lambda, a nested function or closure, a bound method,
        not importable by name, or defined in an interactive session; the message says how to
        fix it.
    """
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if not callable(fn) or not isinstance(qualname, str) or not isinstance(module, str):
        raise SerializationError(
            f"{fn!r} has no importable name; use a function defined with def at module top level"
        )
    if "<lambda>" in qualname:
        raise SerializationError(
            f"a lambda ({module}.{qualname}) cannot run on a machine: the worker imports "
            "functions by name; define it with def at module top level"
        )
    if "<locals>" in qualname:
        raise SerializationError(
            f"{module}.{qualname} is defined inside another function, so the worker cannot "
            "import it; move it to module top level (pass what it captured as arguments)"
        )
    if not isinstance(getattr(fn, "__self__", None), (type, type(None), type(sys))):
        raise SerializationError(
            f"{module}.{qualname} is a bound method; use a module-level function or a "
            "staticmethod/classmethod"
        )
    _check_module_attribute(fn, module, qualname)
    if module != "__main__":
        return f"{module}:{qualname}", []
    alias = _main_module_name()
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if alias is None or not path:
        raise SerializationError(
            f"{qualname} is defined in an interactive session (no file), so a machine cannot "
            "import it; move it into a module (.py file) and import it from there"
        )
    root = os.path.dirname(os.path.abspath(path))
    for _ in range(alias.count(".")):
        root = os.path.dirname(root)
    return f"{alias}:{qualname}", [root]


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
    """

    __slots__ = (
        "arguments_data",
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
    ) -> None:
        self.call_id = call_id
        self.fn = fn
        self.deadline = deadline
        self.result_url = result_url
        self.batch_id = batch_id
        self.sys_path = sys_path
        self.pickle = pickle
        self.arguments_data = arguments_data

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


def _encode_arguments(
    args: Sequence[Any], kwargs: Mapping[str, Any], arg_names: Sequence[str]
) -> bytes:
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
) -> bytes:
    """Encode a call into the payload a machine's worker reads.

    :param fn: the ``module:qualname`` reference (see `function_reference`).
    :param deadline: unix time (s) after which the worker stops the call.
    :param result_url: where the worker PUTs the result.
    :param sys_path: import roots the worker puts in front of ``sys.path``.
    :param pickle: carry arguments and result as pickle (only when the user opted in).
    :param arg_names: names of the positional parameters, used only in error messages.
    :raises SerializationError: an argument cannot be encoded; the message names it and where
        inside it the offending value sits.
    """
    kwargs = {} if kwargs is None else kwargs
    if pickle:
        arguments = _pickle((tuple(args), dict(kwargs)), "the arguments")
    else:
        arguments = _encode_arguments(args, kwargs, arg_names)
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


def _type_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


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
