"""docs/threat-model.md over the object store: whoever reads a machine's config has the
presigned PUT URL of its result, and can overwrite the object, but never supply a result."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import attack_funcs as attack
import httpx
import msgpack  # type: ignore[import-untyped]
import pytest
from _waiting import eventually

import flyjobs
from flyjobs._calls.runtime import get_runtime


def _read_call(call: flyjobs.Call[Any]) -> dict[str, Any]:
    """The call envelope in the machine's config, as a reader of the app's machines sees it."""
    machine_id = eventually(lambda: call.machine_id, "the call got a machine")
    runtime = get_runtime()
    app = runtime.app
    assert app is not None
    machine = runtime.portal.call(lambda: runtime.client.get_machine(app, machine_id))
    assert machine.config is not None and machine.config.files
    raw = machine.config.files[0].raw_value
    assert raw is not None
    envelope: dict[str, Any] = msgpack.unpackb(base64.b64decode(raw), raw=False)
    return envelope


@pytest.mark.parametrize("kind", ["pickle", "import"])
def test_a_forged_object_is_never_taken_for_the_result(
    fly_store: str, tmp_path: Path, kind: str
) -> None:
    marker, go = tmp_path / "pwned", tmp_path / "go"
    call = attack.wait_for_file.spawn(str(go))
    envelope = _read_call(call)
    forged = attack.forged_envelope(envelope, kind, str(marker))
    assert httpx.put(envelope["result_url"], content=forged, timeout=10).is_success
    go.touch()  # the worker's real result overwrites the forged object
    assert call.result(timeout_s=60) == "REAL"
    assert not marker.exists()
    assert "import_side_effect" not in sys.modules


@pytest.mark.parametrize("kind", ["pickle", "import"])
def test_a_forged_object_left_alone_is_ignored(fly_store: str, tmp_path: Path, kind: str) -> None:
    """The machine exits without a result: the forged object is all there is, and the call
    reports a machine without a result instead of running or importing anything."""
    marker, go = tmp_path / "pwned", tmp_path / "go"
    call = attack.exit_after_file.spawn(str(go))
    envelope = _read_call(call)
    forged = attack.forged_envelope(envelope, kind, str(marker))
    assert httpx.put(envelope["result_url"], content=forged, timeout=10).is_success
    go.touch()
    with pytest.raises(flyjobs.MachineCrashedError, match="without a result") as failed:
        call.result(timeout_s=60)
    # It says what happened to the result, not that the function may have called os._exit.
    assert "the stored result failed its seal" in str(failed.value)
    assert "os._exit" not in str(failed.value)
    assert not marker.exists()
    assert "import_side_effect" not in sys.modules
