"""The value codec: msgpack with extension types for what msgpack cannot carry natively.

Imported by the worker runtime, whose import time every call pays, so at import time this module
uses only the standard library modules msgpack loads anyway. Everything else (``decimal``,
``uuid``, ``zoneinfo``, ...) is imported when a value needs it. The envelopes built from these
values are in `flyjobs._wire.call_envelope` and `flyjobs._wire.result_envelope`; function references
in `flyjobs._wire.reference`.

`encode_value` packs plain data with msgpack. What msgpack cannot carry natively travels as
msgpack extension types and comes back as the same type: tuple, set, frozenset, ints beyond 64
bits, datetime (naive or aware; `datetime.timezone` and `zoneinfo.ZoneInfo` zones are kept, any
other tzinfo becomes the fixed offset it had at that instant), date, time, timedelta, Decimal,
UUID, complex, pathlib paths, Enum members, named tuples, dataclass instances (their fields are
restored onto a new instance without calling ``__init__``, as pickle does) and pydantic models
(rebuilt with ``Cls.model_validate``). Classes travel as a ``module:qualname`` reference and are
found again on the other side (`import_reference` says which modules decoding may import). Dict
keys keep their types. Subclasses of str, int, float, bytes, list and dict arrive as the base
type, and bytearray and memoryview as bytes. Anything else raises `SerializationError` naming
where the value sits, unless the call opted in to pickle.
"""

from __future__ import annotations

import os
import reprlib
import sys
from datetime import UTC, date, datetime, time, timedelta, timezone

import msgpack  # type: ignore[import-untyped]

from flyjobs._exceptions import SerializationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = (
    "Unencodable",
    "decode_value",
    "encode_value",
    "import_reference",
    "locate",
    "main_module_name",
    "pack",
    "type_name",
)

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


class Unencodable(Exception):
    """Raised inside msgpack's ``default`` hook; turned into a located SerializationError."""

    def __init__(self, obj: object, reason: str = "") -> None:
        super().__init__(reason)
        self.obj = obj
        self.reason = reason or f"of type {type_name(type(obj))} {_NOT_SERIALIZABLE}"


# --- values -------------------------------------------------------------------------------


def pack(obj: object) -> bytes:
    """msgpack of `obj` with flyjobs' extension types.

    :raises Unencodable: something in `obj` cannot be encoded (`locate` finds where).
    """
    # strict_types makes msgpack hand every tuple and every subclass of a native type to
    # `_default`, so that tuples stay tuples and IntEnum members stay members.
    data: bytes = msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)
    return data


class _Reader:
    """Decodes one value; `may_import` decides which modules a class reference may import."""

    __slots__ = ("may_import",)

    def __init__(self, may_import: Callable[[str], bool] | None) -> None:
        self.may_import = may_import

    def unpack(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=self.ext_hook, raw=False, strict_map_key=False)

    def ext_hook(self, code: int, data: bytes) -> Any:
        decoder = _DECODERS.get(code)
        if decoder is None:
            raise SerializationError(f"unknown flyjobs extension type {code}")
        return decoder(self, data)

    def import_class(self, ref: Any, kind: str, check: Callable[[Any], bool]) -> Any:
        if not isinstance(ref, str):
            raise SerializationError(f"a {kind} reference is malformed")
        try:
            cls = import_reference(ref, may_import=self.may_import)
        except Exception as exc:
            raise SerializationError(f"cannot import {kind} {ref} here: {exc}") from exc
        if not isinstance(cls, type) or not check(cls):
            raise SerializationError(f"{ref} is not a {kind}")
        return cls


def encode_value(value: object, *, where: str = "value") -> bytes:
    """Encode one value (see the module docstring for what round-trips).

    :param where: how to name the value in an error message (``"result"``, ``"argument 'x'"``).
    :raises SerializationError: the value, or something inside it, cannot be encoded; the
        message says where it sits (``argument 'x' [2]['k'] of type socket ...``).
    """
    try:
        return pack(value)
    except Unencodable as exc:
        path = locate(value, exc.obj)
        raise SerializationError(f"{where}{path or ''} {exc.reason}") from None
    except (ValueError, OverflowError) as exc:
        raise SerializationError(
            f"{where} cannot be encoded ({exc}); it is nested too deeply or holds a cycle"
        ) from exc


def decode_value(
    data: bytes, *, where: str = "value", may_import: Callable[[str], bool] | None = None
) -> Any:
    """Decode what `encode_value` produced, rebuilding the classes it names.

    :param may_import: given a module name that is not imported yet, whether a class
        reference in the data may import it (see `import_reference`); None allows any.
    :raises SerializationError: the data is corrupt or a class it names cannot be imported
        here (then ``__cause__`` is the ImportError).
    """
    try:
        return _Reader(may_import).unpack(data)
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
    raise Unencodable(obj)


def _ext(code: int, obj: object) -> msgpack.ExtType:
    return msgpack.ExtType(code, pack(obj))


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
    """The ``module:qualname`` of `obj`'s class; Unencodable if no other side can import it."""
    cls = type(obj)
    module = cls.__module__
    if "<locals>" in cls.__qualname__:
        raise Unencodable(
            obj,
            f"is an instance of {module}.{cls.__qualname__}, a class defined inside a function; "
            "move the class to module top level so the other side can import it",
        )
    if module == "__main__":
        alias = main_module_name()
        if alias is None:
            raise Unencodable(
                obj,
                f"is an instance of {cls.__qualname__}, defined in an interactive session; "
                "move the class into a module (.py file) and import it",
            )
        module = alias
    return f"{module}:{cls.__qualname__}"


def _encode_enum(obj: Any) -> object:
    return _ext(_EXT_ENUM, [_class_ref(obj), obj.value])


def _encode_dataclass(obj: Any) -> object:
    import dataclasses  # lazy: keeps machines light

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


def _decode_tz(state: Any) -> Any:
    if state is None:
        return None
    if state[0] == "z":
        import zoneinfo  # lazy: keeps machines light

        return zoneinfo.ZoneInfo(state[1])
    offset, name = timedelta(microseconds=state[1]), state[2]
    if not offset and name == "UTC":
        return UTC
    return timezone(offset, name)


def _decode_datetime(reader: _Reader, data: bytes) -> datetime:
    year, month, day, hour, minute, second, microsecond, fold, tz = reader.unpack(data)
    return datetime(
        year, month, day, hour, minute, second, microsecond, tzinfo=_decode_tz(tz), fold=fold
    )


def _decode_time(reader: _Reader, data: bytes) -> time:
    hour, minute, second, microsecond, fold, tz = reader.unpack(data)
    return time(hour, minute, second, microsecond, tzinfo=_decode_tz(tz), fold=fold)


def _decode_decimal(reader: _Reader, data: bytes) -> Any:
    import decimal  # lazy: keeps machines light

    return decimal.Decimal(data.decode())


def _decode_uuid(reader: _Reader, data: bytes) -> Any:
    import uuid  # lazy: keeps machines light

    return uuid.UUID(bytes=data)


def _decode_enum(reader: _Reader, data: bytes) -> Any:
    ref, value = reader.unpack(data)
    enum = sys.modules.get("enum")
    cls = reader.import_class(ref, "Enum", lambda c: enum is not None and issubclass(c, enum.Enum))
    return cls(value)


def _decode_dataclass(reader: _Reader, data: bytes) -> Any:
    ref, state = reader.unpack(data)
    cls = reader.import_class(ref, "dataclass", lambda c: hasattr(c, "__dataclass_fields__"))
    obj = cls.__new__(cls)
    # object.__setattr__ also fills frozen and slotted dataclasses.
    for name, value in state.items():
        object.__setattr__(obj, name, value)
    return obj


def _decode_model(reader: _Reader, data: bytes) -> Any:
    ref, state = reader.unpack(data)
    cls = reader.import_class(ref, "pydantic model", lambda c: hasattr(c, "model_validate"))
    try:
        return cls.model_validate(state)
    except Exception as exc:
        raise SerializationError(f"{ref}.model_validate refused the data: {exc}") from exc


def _decode_namedtuple(reader: _Reader, data: bytes) -> Any:
    ref, items = reader.unpack(data)
    cls = reader.import_class(
        ref, "named tuple", lambda c: issubclass(c, tuple) and hasattr(c, "_make")
    )
    return cls._make(items)


def _decode_path(reader: _Reader, data: bytes) -> Any:
    ref, text = reader.unpack(data)
    import pathlib  # lazy: keeps machines light

    cls = reader.import_class(ref, "path class", lambda c: issubclass(c, pathlib.PurePath))
    return cls(text)


_DECODERS: dict[int, Callable[[_Reader, bytes], Any]] = {
    _EXT_TUPLE: lambda r, data: tuple(r.unpack(data)),
    _EXT_SET: lambda r, data: set(r.unpack(data)),
    _EXT_FROZENSET: lambda r, data: frozenset(r.unpack(data)),
    _EXT_BIGINT: lambda _, data: int.from_bytes(data, "big", signed=True),
    _EXT_DATETIME: _decode_datetime,
    _EXT_DATE: lambda r, data: date(*r.unpack(data)),
    _EXT_TIME: _decode_time,
    _EXT_TIMEDELTA: lambda r, data: timedelta(*r.unpack(data)),
    _EXT_DECIMAL: _decode_decimal,
    _EXT_UUID: _decode_uuid,
    _EXT_COMPLEX: lambda r, data: complex(*r.unpack(data)),
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


def locate(root: object, target: object) -> str | None:
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


# --- references to classes ----------------------------------------------------------------


def type_name(cls: type) -> str:
    """``module.qualname`` of `cls` (the bare name for builtins), as errors name types."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def main_module_name() -> str | None:
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


def import_reference(ref: str, *, may_import: Callable[[str], bool] | None = None) -> Any:
    """The object a ``module:qualname`` reference names.

    A module already imported is used as it is; one named after this process's script is its
    ``__main__``. Any other module is imported only if ``may_import(module)`` is true (always
    when `may_import` is None), so data from elsewhere cannot make this process run the
    top-level code of a module it chose.

    :raises ValueError: `ref` is not a ``module:qualname`` reference.
    :raises ImportError: the module cannot be imported, or `may_import` refused it.
    :raises AttributeError: the module has no such attribute.
    """
    module_name, _, qualname = ref.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"{ref!r} is not a 'module:qualname' reference")
    module = sys.modules.get(module_name)
    if module is None and module_name == main_module_name():
        # A class of the script being run comes back under the script's module name: it is
        # this process's __main__, not a second copy of the script.
        module = sys.modules["__main__"]
    if module is None:
        if may_import is not None and not may_import(module_name):
            raise ImportError(f"module {module_name} is not imported here and was not trusted")
        __import__(module_name)
        module = sys.modules[module_name]
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
