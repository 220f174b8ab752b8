"""What bench/remote.py and bench/fanout.py share: the embedded emulator set up as an image
would run, and the bare machine lifecycle they compare flyjobs against.

Import it before flyjobs starts its runtime: machines inherit this process's environment.
"""

from __future__ import annotations

import os
import tempfile

from flyjobs._calls.runtime import Runtime
from flyjobs.machines import MachineConfig

os.environ.pop("FLY_API_TOKEN", None)  # the embedded emulator, always
# A real image runs from bytecode pip compiled at install; with PYTHONDONTWRITEBYTECODE (set on
# some hosts, this one included) every local machine would compile flyjobs from source instead,
# so machines get a bytecode cache, as in bench/worker.py.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
_PYCACHE = tempfile.TemporaryDirectory(prefix="flyjobs-bench-pyc-")  # removed at exit
os.environ["PYTHONPYCACHEPREFIX"] = _PYCACHE.name


def bare_config(runtime: Runtime) -> MachineConfig:
    """The machine of the bare lifecycle: ``python -c "import msgpack"``, the floor of any
    worker, with the same guest and destroy settings as a flyjobs call."""
    return MachineConfig.model_validate(
        {
            "image": runtime.image,
            "auto_destroy": True,
            "restart": {"policy": "no"},
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "init": {"cmd": ["python", "-c", "import msgpack"]},
        }
    )


async def bare_lifecycle(runtime: Runtime, config: MachineConfig) -> None:
    """Create one machine and wait until it has stopped or been destroyed."""
    assert runtime.app is not None
    machine = await runtime.client.create_machine(runtime.app, config)
    await runtime.client.wait(runtime.app, machine.id, ("stopped", "destroyed"), timeout_s=60)
