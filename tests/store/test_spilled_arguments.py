"""docs/threat-model.md, 3c: arguments too large for the machine config travel through the
bucket (``args/<call id>``), where a bucket writer can replace them; the call envelope in the
config carries their digest, and the worker refuses other bytes unread."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import attack_funcs as attack
import pytest
import spill_funcs as funcs
from _store_helpers import APP, objects
from _waiting import eventually

import flyjobs
from flyjobs._calls.plan import MAX_INLINE_PAYLOAD_BYTES
from flyjobs._calls.runtime import get_runtime
from flyjobs._results.store import Store, StoreConfig
from flyjobs._wire.call_envelope import decode_call, encode_arguments, encode_call
from flyjobs._wire.machine import EXIT_BAD_PAYLOAD

#: Over the inline limit: these arguments spill to the store.
BIG = b"a" * (MAX_INLINE_PAYLOAD_BYTES + 1)


def _replace(bucket: str, key: str, data: bytes) -> None:
    """Overwrite the object `key`, as anyone who can write the bucket can."""
    config = StoreConfig.load(f"s3://{bucket}/flyjobs")
    assert config is not None
    Store(config).put_sync(key, data)


def _machine_of(call: flyjobs.Call[Any]) -> str:
    """The call's machine, once created (its arguments were stored before)."""
    return eventually(lambda: call.machine_id, "the call got a machine")


def _exit_codes(machine_id: str) -> list[int]:
    """The exit codes of the machine's exit events, once it is destroyed."""
    runtime = get_runtime()

    async def read() -> list[int]:
        await runtime.client.wait(APP, machine_id, "destroyed", timeout_s=30)
        events = await runtime.client.list_events(APP, machine_id)
        return [e.exit_event.exit_code for e in events if e.exit_event is not None]

    return runtime.portal.call(read)


@pytest.mark.parametrize("kind", ["pickle", "msgpack"])
def test_spilled_arguments_replaced_in_the_bucket_are_refused_unread(
    fly_store: str, tmp_path: Path, kind: str
) -> None:
    marker, gate = tmp_path / "pwned", tmp_path / "gate"
    if kind == "pickle":
        fn = funcs.pickled_size_and_pid
        # Unpickling it on the machine would create `marker`: code of the writer's choosing.
        swapped = pickle.dumps(attack.RunsOnUnpickle(str(marker)))
    else:
        fn = funcs.size_and_pid
        swapped = encode_arguments([b"other input"], {})  # silently other inputs
    call = fn.with_options(env={"SPILL_GATE": str(gate)}).spawn(BIG)
    machine_id = _machine_of(call)
    key = f"args/{call.id}"
    assert [info.key for info in objects(fly_store, "args/")] == [key]
    _replace(fly_store, key, swapped)
    gate.touch()  # the worker imports the function, then fetches the replaced object
    with pytest.raises(flyjobs.FlyjobsError) as refused:
        call.result(timeout_s=60)
    assert not marker.exists()
    assert isinstance(refused.value, flyjobs.SerializationError), refused.value
    message = str(refused.value)
    assert f"call {call.id} " in message
    assert "someone who can write the bucket replaced them" in message
    assert _exit_codes(machine_id) == [EXIT_BAD_PAYLOAD]


def test_a_call_envelope_binds_its_spilled_arguments_by_digest() -> None:
    """Every payload (a call's, a batch's slices and the next calls an inbox answers with, a
    pool's) is made by `encode_call`: with an arguments URL it carries their digest."""
    payload = encode_call(
        "m:f",
        call_id="fj-1",
        deadline=0.0,
        result_url="http://127.0.0.1:1/r",
        arguments=encode_arguments([BIG]),
        arguments_url="http://127.0.0.1:1/a",
    )
    assert len(payload) < 1024  # the arguments themselves stay out of the config
    call = decode_call(payload)
    with pytest.raises(flyjobs.SerializationError, match="replaced them"):
        call.take_arguments(encode_arguments([BIG[:-1] + b"b"]))
    assert call.arguments_data == b""
    call.take_arguments(encode_arguments([BIG]))
    assert call.arguments() == ((BIG,), {})


def test_spilled_arguments_of_the_next_calls_an_inbox_answers_with_arrive(
    fly_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch machine over the inbox takes its next calls from the answers to its deliveries:
    each carries its spilled arguments' digest, and the worker takes the genuine ones."""
    monkeypatch.setenv("FLYJOBS_RESULTS", "inbox")
    monkeypatch.setenv("FLYJOBS_INBOX_HOST", "127.0.0.1")
    inputs = [BIG + b"x" * n for n in range(3)]
    outputs = list(funcs.size_and_pid.map(inputs, max_machines=1))
    assert get_runtime().channel.mode == "inbox"
    assert [size for size, _ in outputs] == [len(data) for data in inputs]
    assert len({pid for _, pid in outputs}) == 1  # one machine: calls 2 and 3 came as answers
    assert objects(fly_store, "args/") == []
