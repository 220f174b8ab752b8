"""The call envelope: one call as it travels to a machine (a msgpack map).

Imported by the worker runtime: standard library and msgpack only at import time.

``arguments`` is a nested blob so that the header can be read, and ``sys_path`` applied, before
any class named in the arguments is imported::

    {"flyjobs": 2, "call_id": str, "fn": "module:qualname", "deadline": float (unix s),
     "result_url": str, "batch_id": str | None, "sys_path": [str], "pickle": bool,
     "arguments": bytes,          # encode_value([args, kwargs]), or pickle of (args, kwargs)
     "arguments_url": str | None, # if set, `arguments` is empty: GET them there (they were over
                                  # the inline limit and spilled to the object store)
     "arguments_digest": bytes,   # with arguments_url: their `arguments_digest` (else absent):
                                  # a bucket writer can replace the object, not this
     "pulls": bool,               # a batch machine's call: the delivery's answer may carry the
                                  # next call (absent: false)
     "then": [bytes],             # call envelopes the machine runs after this one, in order (a
                                  # fixed slice of a batch, over the object store; absent: [])
     "chunk_url": str,            # after this call and `then`: a presigned GET of the object
                                  # holding the machine's next chunk of calls (a store-mode
                                  # batch machine, `flyjobs._wire.chunk`; absent: none)
     "concurrent": [bytes],       # with pulls: call envelopes the machine runs at the same time
                                  # as this one, each starting a pull loop of its own (a warm
                                  # pool's max_concurrency; absent: [], one loop)
     "schedule": None | {...},    # a scheduled function's payload: no caller, see below
     "idle_s": float,             # with pulls: seconds the answer may be held (absent:
                                  # NEXT_INPUT_WAIT_S)
     "code": None | {...},        # the caller's code bundle the function is imported from
                                  # (absent: the image's code), see below
     "traceparent": str}          # the W3C trace context of the call's span, when the caller
                                  # traces (absent: it does not)

``code`` is ``{"sha256": str, "seal": str, "path": str | None, "url": str | None,
"requires": [[module, distribution, version]]}``: the bundle's sha256 (hex), sealed for this
call with the result key (`flyjobs._wire.seal.seal_code`, empty without a key), where the bundle
is (the guest path of a file of the machine config, or a URL to GET it from), and the installed
distributions its modules import with the caller's versions (absent: none; see
`flyjobs._machine_side.drift`). The worker checks seal and hash before it unpacks
(`flyjobs._machine_side.code`).

A scheduled payload (``flyjobs schedule deploy``) has no caller: its ``result_url`` is empty, its
``deadline`` 0, and ``schedule`` holds ``{"every": "hourly"}`` or ``{"cron": str, "tz": str}``
plus ``"timeout_s": float`` and ``"retries": int``; each run's outcome goes to the machine's log
(`flyjobs._machine_side.scheduled_run`).

Everything in it is readable by anyone who can read the machine's config (see
docs/threat-model.md), so it carries no secret.
"""

from __future__ import annotations

from flyjobs._exceptions import SerializationError
from flyjobs._wire.codec import Unencodable, decode_value, locate, pack
from flyjobs._wire.framing import ENVELOPE_VERSION, dumps_pickle, field, loads_pickle, read_envelope
from flyjobs._wire.machine import NEXT_INPUT_WAIT_S

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

__all__ = ("CallEnvelope", "decode_call", "encode_arguments", "encode_call")


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
    :ivar pulls: the machine takes more than one input: delivering this call's result may
        answer with its next call (see `flyjobs._wire.machine.NEXT_INPUT_WAIT_S`).
    :ivar idle_s: with `pulls`, seconds the answer to the delivery may be held (the machine's
        idle period: a batch's `NEXT_INPUT_WAIT_S`, a warm pool's ``idle_s``).
    :ivar arguments_url: where to GET `arguments_data` instead, when it was too large to travel
        in the payload (empty until then).
    :ivar arguments_digest: with `arguments_url`, the `arguments_digest` of the arguments there
        (see `take_arguments`).
    :ivar then: encoded call envelopes to run after this one, in order (a batch machine's fixed
        slice of inputs when results go through the object store and it cannot pull).
    :ivar chunk_url: where to GET the machine's next chunk of calls once this call and
        `then` have run (see `flyjobs._wire.chunk`); None: no more after them.
    :ivar concurrent: encoded call envelopes to run at the same time as this one, each the
        first call of a pull loop of its own (the further slots of a warm pool's machine with
        ``max_concurrency`` > 1).
    :ivar schedule: for a scheduled function's payload, its schedule (see the module
        docstring); None for a call.
    :ivar code: the caller's code bundle (see the module docstring): ``sha256``, ``seal``,
        ``path``, ``url``; None when the function is the image's.
    :ivar traceparent: the W3C ``traceparent`` of the caller's span of the call, when the
        caller traces (see `flyjobs._machine_side.trace_context`); None otherwise.
    """

    __slots__ = (
        "arguments_data",
        "arguments_digest",
        "arguments_url",
        "pulls",
        "batch_id",
        "call_id",
        "chunk_url",
        "code",
        "concurrent",
        "deadline",
        "fn",
        "idle_s",
        "pickle",
        "result_url",
        "schedule",
        "sys_path",
        "then",
        "traceparent",
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
        arguments_digest: bytes | None = None,
        pulls: bool = False,
        then: list[bytes] | None = None,
        schedule: dict[str, Any] | None = None,
        idle_s: float = NEXT_INPUT_WAIT_S,
        concurrent: list[bytes] | None = None,
        code: dict[str, Any] | None = None,
        traceparent: str | None = None,
        chunk_url: str | None = None,
    ) -> None:
        self.code = code
        self.traceparent = traceparent
        self.chunk_url = chunk_url
        self.pulls = pulls
        self.then = then or []
        self.concurrent = concurrent or []
        self.idle_s = idle_s
        self.call_id = call_id
        self.fn = fn
        self.deadline = deadline
        self.result_url = result_url
        self.batch_id = batch_id
        self.sys_path = sys_path
        self.pickle = pickle
        self.arguments_data = arguments_data
        self.arguments_url = arguments_url
        self.arguments_digest = arguments_digest
        self.schedule = schedule

    def take_arguments(self, data: bytes) -> None:
        """Take `data`, fetched from `arguments_url`, as the arguments, if it is what the caller
        stored: its digest is the one the payload carries.

        :raises SerializationError: it is not (someone who can write the bucket replaced the
            object); nothing of it is decoded.
        """
        # Checked before any decoding: with pickle, decoding a replaced object would run its
        # code on the machine, which holds the app's secrets.
        if self.arguments_digest is None or arguments_digest(data) != self.arguments_digest:
            raise SerializationError(
                "its arguments read from the object store are not the ones its caller stored"
                " (their digest differs from the one in the call's payload), so someone who can"
                " write the bucket replaced them; the machine refused them unread. Check who"
                " holds write access to the bucket (FLYJOBS_STORE), then call again"
            )
        self.arguments_data = data

    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode ``(args, kwargs)``, importing the classes they name (apply `sys_path` first).

        :raises SerializationError: corrupt data, or a class cannot be imported here.
        """
        if self.pickle:
            decoded = loads_pickle(self.arguments_data, "the arguments")
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


def arguments_digest(data: bytes) -> bytes:
    """The digest (BLAKE2b, 32 bytes) that binds spilled arguments to their call envelope."""
    # From _blake2, as in flyjobs._wire.seal: hashlib would load OpenSSL in the worker.
    from _blake2 import blake2b

    return blake2b(data, digest_size=32, person=b"flyjobs-args").digest()


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
        return dumps_pickle((tuple(args), dict(kwargs)), "the arguments")
    try:
        return pack([list(args), dict(kwargs)])
    except Unencodable as exc:
        labelled = [(_argument_label(i, arg_names), a) for i, a in enumerate(args)]
        labelled += [(f"argument {name!r}", value) for name, value in kwargs.items()]
        for label, value in labelled:
            path = locate(value, exc.obj)
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
    pulls: bool = False,
    then: Sequence[bytes] = (),
    schedule: Mapping[str, Any] | None = None,
    idle_s: float = NEXT_INPUT_WAIT_S,
    concurrent: Sequence[bytes] = (),
    code: Mapping[str, Any] | None = None,
    traceparent: str | None = None,
    chunk_url: str | None = None,
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
    :param pulls: the machine asks for its next input when it delivers this result.
    :param then: encoded calls the machine runs after this one, in order.
    :param idle_s: with ``pulls``, seconds the answer to that delivery may be held.
    :param concurrent: with ``pulls``, encoded calls the machine runs at the same time as this
        one, each in a pull loop of its own.
    :param chunk_url: the presigned GET of the machine's next chunk of calls, read once this
        call and ``then`` have run (see `flyjobs._wire.chunk`).
    :param arguments_url: a URL the worker GETs the encoded arguments from instead: the
        envelope then carries their digest (`arguments_digest`) in place of them.
    :param schedule: makes a scheduled function's payload (see the module docstring).
    :param code: the caller's code bundle the worker imports the function from (see the
        module docstring).
    :param traceparent: the W3C trace context of the caller's span of the call.
    :raises SerializationError: an argument cannot be encoded; the message names it and where
        inside it the offending value sits.
    """
    if arguments is None:
        arguments = encode_arguments(args, kwargs, pickle=pickle, arg_names=arg_names)
    digest = None
    if arguments_url:
        digest, arguments = arguments_digest(arguments), b""
    envelope = {
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
        "pulls": pulls,
        "then": list(then),
        "idle_s": float(idle_s),
    }
    if digest is not None:
        envelope["arguments_digest"] = digest
    if concurrent:
        envelope["concurrent"] = list(concurrent)
    if chunk_url:
        envelope["chunk_url"] = chunk_url
    if schedule is not None:
        envelope["schedule"] = dict(schedule)
    if code is not None:
        envelope["code"] = dict(code)
    if traceparent is not None:
        envelope["traceparent"] = traceparent
    return pack(envelope)


def decode_call(data: bytes) -> CallEnvelope:
    """Decode a call payload's header; the arguments stay encoded until `CallEnvelope.arguments`.

    :raises SerializationError: the data is not a flyjobs call envelope of this version.
    """
    envelope = read_envelope(data, "call")
    sys_path = field(envelope, "sys_path", list)
    if not all(isinstance(entry, str) for entry in sys_path):
        raise SerializationError("flyjobs envelope field 'sys_path' is malformed")
    return CallEnvelope(
        call_id=field(envelope, "call_id", str),
        fn=field(envelope, "fn", str),
        deadline=float(field(envelope, "deadline", (int, float))),
        result_url=field(envelope, "result_url", str),
        batch_id=field(envelope, "batch_id", (str, type(None))),
        sys_path=sys_path,
        pickle=field(envelope, "pickle", bool),
        arguments_data=field(envelope, "arguments", bytes),
        arguments_url=field(envelope, "arguments_url", (str, type(None))),
        arguments_digest=field(envelope, "arguments_digest", (bytes, type(None))),
        pulls=envelope.get("pulls") is True,
        then=_calls(envelope.get("then"), "then"),
        concurrent=_calls(envelope.get("concurrent"), "concurrent"),
        schedule=field(envelope, "schedule", (dict, type(None))),
        idle_s=_idle_s(envelope.get("idle_s", NEXT_INPUT_WAIT_S)),
        code=_code(envelope.get("code")),
        traceparent=field(envelope, "traceparent", (str, type(None))),
        chunk_url=field(envelope, "chunk_url", (str, type(None))),
    )


def _code(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not all(isinstance(value.get(key), str) for key in ("sha256", "seal"))
        or not all(isinstance(value.get(key), (str, type(None))) for key in ("path", "url"))
        or not _requires(value.get("requires", []))
    ):
        raise SerializationError("flyjobs envelope field 'code' is malformed")
    return value


def _requires(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(each, list) and len(each) == 3 and all(isinstance(s, str) for s in each)
        for each in value
    )


def _calls(value: object, name: str) -> list[bytes]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(call, bytes) for call in value):
        raise SerializationError(f"flyjobs envelope field {name!r} is malformed")
    return value


def _idle_s(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise SerializationError("flyjobs envelope field 'idle_s' is malformed")
    return float(value)
