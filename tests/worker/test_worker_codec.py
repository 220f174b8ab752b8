"""The payload codec: values, call and result envelopes, function references, exceptions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pathlib
import socket
import subprocess
import sys
import textwrap
import uuid
import zoneinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pydantic
import pytest
from worker_funcs import BoomError, Box, CodedError, Color, Level, Pair, Point, square

from flyjobs._exceptions import RemoteError, SerializationError
from flyjobs._wire.call_envelope import decode_call, encode_call
from flyjobs._wire.codec import decode_value, encode_value
from flyjobs._wire.framing import ENVELOPE_VERSION
from flyjobs._wire.reference import function_reference
from flyjobs._wire.remote_errors import ErrorInfo, describe_exception, rebuild_exception
from flyjobs._wire.result_envelope import decode_result, encode_result


class Model(pydantic.BaseModel):
    name: str
    when: dt.datetime
    points: list[Point] = []
    aliased: int = pydantic.Field(default=0, alias="aliasedValue")


VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63 - 1,
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    -(2**200),
    3**150,
    1.5,
    float("inf"),
    "text ✓",
    "",
    b"\x00bytes",
    [1, "a", None],
    (1, 2),
    (),
    ((1, (2, 3)), [4, (5,)]),
    {1, 2, 3},
    frozenset({"a", "b"}),
    {"nested": {"tuple": (1, 2), "set": {1}}},
    {1: "int key", (1, 2): "tuple key", frozenset({3}): "frozenset key", None: 0, b"k": 1},
    dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
    dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
    dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2), "CEST")),
    dt.datetime(2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1),
    dt.date(1999, 12, 31),
    dt.time(23, 59, 58, 999),
    dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    dt.timedelta(days=-2, seconds=5, microseconds=7),
    Decimal("3.14159265358979323846264338327950288"),
    Decimal("-0"),
    Decimal("NaN"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    complex(1, -2),
    pathlib.PurePosixPath("/a/b"),
    pathlib.Path("relative/file.txt"),
    Color.GREEN,
    Level.HIGH,
    Point(1, 2, ("a",)),
    Box([1, (2, 3)], label="x"),
    Pair(Point(0, 0), {"k": Level.LOW}),
    Model(name="m", when=dt.datetime(2020, 1, 1), points=[Point(3, 4)], aliasedValue=7),
    [Model(name="n", when=dt.datetime(2021, 1, 1, tzinfo=dt.UTC))],
]


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(_same(k, k2) and _same(v, b[k2]) for k2 in b if k2 == k) for k, v in a.items()
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (dt.datetime, dt.time)):
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold and str(a) == str(b)
    if isinstance(a, Decimal) and a.is_nan():
        return bool(b.is_nan())
    if isinstance(a, Box):
        return _same(a.items, b.items) and a.label == b.label and a.size == b.size
    return bool(a == b)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_value_round_trips_with_its_types(value: Any) -> None:
    decoded = decode_value(encode_value(value))
    assert _same(decoded, value), (decoded, value)


def test_aware_datetime_keeps_its_zone_and_instant() -> None:
    zone = zoneinfo.ZoneInfo("Europe/Paris")
    moment = dt.datetime(2024, 3, 31, 3, 30, tzinfo=zone)
    decoded = decode_value(encode_value(moment))
    assert decoded.tzinfo is zone  # ZoneInfo caches instances by key
    assert decoded.utcoffset() == moment.utcoffset()
    assert decode_value(encode_value(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))).tzinfo is dt.UTC


def test_subclasses_of_plain_types_arrive_as_the_base_type() -> None:
    class Text(str):
        pass

    from collections import OrderedDict, defaultdict

    values = [Text("t"), OrderedDict(a=1), defaultdict(list, b=[2]), bytearray(b"x")]
    decoded = decode_value(encode_value(values))
    assert decoded == ["t", {"a": 1}, {"b": [2]}, b"x"]
    assert [type(v) for v in decoded] == [str, dict, dict, bytes]


def test_unserializable_argument_is_named_with_its_path() -> None:
    with socket.socket() as sock:
        with pytest.raises(SerializationError) as caught:
            encode_call(
                "m:f",
                (1, [0, 1, {"k": sock}]),
                call_id="c",
                deadline=0,
                result_url="",
                arg_names=("a", "x"),
            )
        message = str(caught.value)
        assert message.startswith("argument 'x' [2]['k'] of type socket.socket is not serializable")
        assert "pickle=True" in message
        assert isinstance(caught.value, TypeError)

        with pytest.raises(SerializationError, match=r"^argument 'opts' \.right of type"):
            encode_call("m:f", (), {"opts": Pair(1, sock)}, call_id="c", deadline=0, result_url="")
        with pytest.raises(SerializationError, match=r"^positional argument 0 of type"):
            encode_call("m:f", (sock,), call_id="c", deadline=0, result_url="")
        with pytest.raises(SerializationError, match=r"^the result \[0\] of type socket"):
            encode_result("c", value=[sock])


def test_class_defined_in_a_function_is_refused_with_the_fix() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(SerializationError, match="defined inside a function; move the class"):
        encode_value({"v": Local(1)}, where="argument 'v'")


def test_cycles_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="nested too deeply or holds a cycle"):
        encode_value(loop)


def test_corrupt_or_foreign_data_is_refused() -> None:
    with pytest.raises(SerializationError):
        decode_value(b"\xc1")
    with pytest.raises(SerializationError, match="unknown flyjobs extension type 99"):
        decode_value(msgpack.packb(msgpack.ExtType(99, b"")))
    with pytest.raises(SerializationError, match="not a flyjobs call envelope"):
        decode_call(msgpack.packb({"hello": 1}))
    with pytest.raises(SerializationError, match="version 1 is not supported"):
        decode_call(msgpack.packb({"flyjobs": 1}))
    with pytest.raises(SerializationError, match="'fn' is missing or malformed"):
        decode_call(msgpack.packb({"flyjobs": ENVELOPE_VERSION, "call_id": "c", "sys_path": []}))


def test_class_that_cannot_be_imported_is_a_serialization_error_caused_by_import() -> None:
    data = encode_value(Point(1, 2)).replace(b"worker_funcs", b"nowhere_mod1")
    with pytest.raises(SerializationError, match="cannot import dataclass nowhere_mod1:Point"):
        try:
            decode_value(data)
        except SerializationError as exc:
            assert isinstance(exc.__cause__, ImportError)
            raise


def test_call_envelope_round_trips() -> None:
    data = encode_call(
        "worker_funcs:square",
        (3, Point(1, 2)),
        {"k": (1,)},
        call_id="call-1",
        deadline=1700000000.5,
        result_url="http://127.0.0.1:1/r",
        batch_id="b1",
        sys_path=["/x"],
    )
    call = decode_call(data)
    assert (call.call_id, call.fn, call.deadline, call.result_url) == (
        "call-1",
        "worker_funcs:square",
        1700000000.5,
        "http://127.0.0.1:1/r",
    )
    assert (call.batch_id, call.sys_path, call.pickle) == ("b1", ["/x"], False)
    assert call.arguments() == ((3, Point(1, 2)), {"k": (1,)})


class Opaque:
    """Plain object: msgpack cannot carry it, pickle can."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque)


def test_pickle_is_used_only_when_opted_in() -> None:
    with pytest.raises(
        SerializationError, match=r"of type tests\.worker\.test_worker_codec\.Opaque"
    ):
        encode_call("m:f", (Opaque(),), call_id="c", deadline=0, result_url="")
    call = decode_call(
        encode_call("m:f", (Opaque(),), call_id="c", deadline=0, result_url="", pickle=True)
    )
    assert call.pickle
    assert call.arguments() == ((Opaque(),), {})
    assert (
        decode_result(encode_result("c", value=Opaque(), pickle=True)).value(pickle=True)
        == Opaque()
    )


def rebuild(error: ErrorInfo, *, pickle: bool = False) -> Exception:
    """The exception a caller raises for `error` (any module may be imported here)."""
    return rebuild_exception(error, pickle=pickle, may_import=lambda _: True)


def _error(exc: BaseException, **kwargs: Any) -> ErrorInfo:
    try:
        raise exc
    except BaseException as raised:
        return describe_exception(raised, stage="call", **kwargs)


def test_result_envelope_carries_value_output_and_timings() -> None:
    data = encode_result(
        "c1",
        value={"p": Point(1, 2)},
        stdout_tail="out\n",
        stderr_tail="err\n",
        timings={"worker_start": 1.0, "function_start": 2.0, "function_end": 3.0},
    )
    result = decode_result(data)
    assert result.ok and result.error is None
    assert result.value(pickle=False) == {"p": Point(1, 2)}
    assert (result.stdout_tail, result.stderr_tail) == ("out\n", "err\n")
    assert result.timings["function_end"] == 3.0


def test_exception_is_rebuilt_as_its_own_type_with_the_remote_traceback() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise BoomError("outer") from inner
    except BoomError as exc:
        info = describe_exception(exc, stage="call")
    result = decode_result(encode_result("c", error=info))
    assert not result.ok and result.error is not None
    error = result.error
    assert error.type == "worker_funcs.BoomError"
    assert error.causes == [{"type": "KeyError", "message": "'inner'"}]
    assert "raise BoomError" in error.traceback and "KeyError: 'inner'" in error.traceback
    rebuilt = rebuild(error)
    assert type(rebuilt) is BoomError
    assert rebuilt.args == ("outer",)
    assert rebuilt.remote_traceback == error.traceback  # type: ignore[attr-defined]
    assert any("raise BoomError" in note for note in rebuilt.__notes__)


def test_exception_with_several_args_is_rebuilt() -> None:
    rebuilt = rebuild(_error(CodedError(7, "detail text")))
    assert isinstance(rebuilt, CodedError)
    assert (rebuilt.code, rebuilt.detail) == (7, "detail text")


def test_unimportable_or_unbuildable_exception_becomes_remote_error() -> None:
    ghost = type("Ghost", (Exception,), {"__module__": "no_such_module_anywhere"})
    rebuilt = rebuild(_error(ghost("boo")))
    assert isinstance(rebuilt, RemoteError)
    assert rebuilt.type_name == "no_such_module_anywhere.Ghost"
    assert "no_such_module_anywhere.Ghost: boo" in str(rebuilt)
    assert "Remote traceback" in str(rebuilt) and "raise exc" in rebuilt.remote_traceback

    with socket.socket() as sock:
        unencodable_args = rebuild(_error(ValueError(sock)))
    assert isinstance(unencodable_args, RemoteError)


def test_remote_system_exit_is_never_rebuilt() -> None:
    for exc in (SystemExit(3), KeyboardInterrupt()):
        assert isinstance(rebuild(_error(exc)), RemoteError)


def test_pickled_exception_keeps_its_attributes() -> None:
    error = _error(CodedError(5, "x"), pickle=True)
    decoded = decode_result(encode_result("c", error=error, pickle=True)).error
    assert decoded is not None
    rebuilt = rebuild(decoded, pickle=True)
    assert isinstance(rebuilt, CodedError) and rebuilt.code == 5


def test_function_reference_of_module_function() -> None:
    assert function_reference(square) == ("worker_funcs:square", [])
    assert function_reference(Point) == ("worker_funcs:Point", [])


def test_function_reference_refuses_lambdas_closures_and_methods() -> None:
    with pytest.raises(SerializationError, match="lambda.*define it with def at module top"):
        function_reference(lambda x: x)

    def inner(x: int) -> int:
        return x

    with pytest.raises(SerializationError, match="inside another function.*module top level"):
        function_reference(inner)
    with pytest.raises(SerializationError, match="bound method"):
        function_reference(Point(1, 2).__eq__)
    with pytest.raises(SerializationError, match="no importable name"):
        function_reference(object())


def _run_script(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "hello.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, *args, str(script)] if args != ("-c",) else [sys.executable, "-c", body],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )


def test_function_reference_maps_a_script_to_its_module_name(tmp_path: Path) -> None:
    body = """
        import dataclasses, json
        from flyjobs._wire.codec import encode_value, decode_value
        from flyjobs._wire.reference import function_reference

        @dataclasses.dataclass
        class Item:
            n: int

        def square(x):
            return x * x

        ref, roots = function_reference(square)
        same = decode_value(encode_value(Item(1))) == Item(1)
        print(json.dumps([ref, roots, b"hello:Item" in encode_value(Item(1)), same]))
    """
    done = _run_script(tmp_path, body)
    assert done.returncode == 0, done.stderr
    ref, roots, named_by_module, same_class = json.loads(done.stdout)
    assert ref == "hello:square"
    assert roots == [str(tmp_path.resolve())]
    assert named_by_module and same_class


def test_function_reference_refuses_interactive_functions(tmp_path: Path) -> None:
    body = textwrap.dedent(
        """
        from flyjobs._wire.reference import function_reference
        def square(x):
            return x * x
        try:
            function_reference(square)
        except TypeError as exc:
            print(exc)
        """
    )
    done = _run_script(tmp_path, body, "-c")
    assert "interactive session" in done.stdout and "move it into a module" in done.stdout


def _naming(ref: str) -> bytes:
    """An encoded value naming the dataclass `ref`, as a hostile result would."""
    inner = msgpack.packb([ref, {"value": 1}], use_bin_type=True)
    data: bytes = msgpack.packb(msgpack.ExtType(12, inner), use_bin_type=True)
    return data


def test_a_result_imports_only_trusted_modules() -> None:
    # A value or an exception naming a module the caller never imported does not import it.
    refuse_all = lambda _module: False  # noqa: E731
    with pytest.raises(SerializationError, match="not imported here"):
        decode_value(_naming("import_side_effect:Thing"), may_import=refuse_all)
    error = ErrorInfo(
        type="import_side_effect.Thing",
        module="import_side_effect",
        message="m",
        traceback="tb",
        causes=[],
        args_data=encode_value(()),
        stage="call",
    )
    assert isinstance(rebuild_exception(error, pickle=False, may_import=refuse_all), RemoteError)
    assert "import_side_effect" not in sys.modules
    # A class of a module already imported comes back, trusted or not.
    assert decode_value(encode_value(Point(1, 2)), may_import=refuse_all) == Point(1, 2)
    # The caller's policy is asked about exactly the module the value names.
    asked: list[str] = []
    with pytest.raises(SerializationError):
        decode_value(_naming("import_side_effect:Thing"), may_import=asked.append)  # type: ignore[arg-type]
    assert asked == ["import_side_effect"]


class TwoPartError(Exception):
    """Its __init__ takes two arguments but hands one message to Exception."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def test_exception_whose_init_does_not_take_its_args_back_is_rebuilt() -> None:
    rebuilt = rebuild(_error(TwoPartError(4, "bad")))
    assert type(rebuilt) is TwoPartError
    assert (rebuilt.code, rebuilt.detail, str(rebuilt)) == (4, "bad", "4: bad")
