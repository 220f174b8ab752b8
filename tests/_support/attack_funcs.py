"""Remote functions of the threat-model tests (tests/test_threat_model.py)."""

from __future__ import annotations

import os
import pickle
import time
from typing import Any

import msgpack  # type: ignore[import-untyped]

import flyjobs
from flyjobs import worker

#: The class reference a forged value names: a module the caller never imported.
FOREIGN_CLASS = "import_side_effect:Thing"
_EXT_DATACLASS = 12  # flyjobs._wire.codec's extension code for a dataclass instance


@flyjobs.remote(timeout_s=60)
def wait_for_file(path: str) -> str:
    """Return "REAL" once `path` exists (the test creates it after its attack)."""
    while not os.path.exists(path):
        time.sleep(0.01)
    return "REAL"


@flyjobs.remote(timeout_s=60)
def exit_after_file(path: str) -> None:
    """Exit without a result once `path` exists: whatever sits at the result's place is all the
    caller will find."""
    while not os.path.exists(path):
        time.sleep(0.01)
    os._exit(0)


@flyjobs.remote(timeout_s=60)
def nothing() -> None:
    return None


class RunsOnUnpickle:
    """Unpickling it creates the file `marker`: code of the sender's choosing runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def forged_envelope(call: dict[str, Any], kind: str, marker: str) -> bytes:
    """A result envelope for `call` (a decoded call envelope) that attacks its decoder.

    ``pickle``: the envelope claims pickle and carries one that creates `marker`;
    ``import``: a plain value naming a class of a module the caller never imported.
    """
    if kind == "pickle":
        value = pickle.dumps(RunsOnUnpickle(marker))
    else:
        ref = msgpack.packb([FOREIGN_CLASS, {"value": 1}], use_bin_type=True)
        value = msgpack.packb(msgpack.ExtType(_EXT_DATACLASS, ref), use_bin_type=True)
    data: bytes = msgpack.packb(
        {
            "flyjobs": call["flyjobs"],
            "call_id": call["call_id"],
            "ok": True,
            "pickle": kind == "pickle",
            "value": value,
            "error": None,
            "stdout_tail": "",
            "stderr_tail": "",
            "timings": {},
        },
        use_bin_type=True,
    )
    return data


@flyjobs.remote(timeout_s=60)
def deliver_forged_result(kind: str, marker: str) -> str:
    """Code on a machine, holding the app's secrets, delivers a hostile result of its own
    before the worker delivers the function's."""
    from flyjobs._wire.seal import RESULT_KEY_ENV, seal_result, ticket_id

    with open(worker.payload_path(), "rb") as file:
        call = msgpack.unpackb(file.read(), raw=False)
    body = forged_envelope(call, kind, marker)
    key = os.environ[RESULT_KEY_ENV]
    status, _ = worker._put(
        call["result_url"],
        seal_result(key, body, ticket=ticket_id(call["result_url"])),
        result_key=key,
    )
    assert status == 204, status
    return "REAL"
