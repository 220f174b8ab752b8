"""Helpers of the warm-pool tests: a pool's machines on the embedded emulator."""

from __future__ import annotations

from _remote_helpers import machines, metadata

import flyjobs
from flyjobs._calls.runtime import Runtime
from flyjobs._wire.metadata import META_POOL
from flyjobs.machines import Machine


def pool_machines(runtime: Runtime, pool: flyjobs.Pool) -> list[Machine]:
    """Every machine the pool has had, destroyed ones included."""
    return [m for m in machines(runtime) if metadata(m).get(META_POOL) == pool.name]


def live(runtime: Runtime, pool: flyjobs.Pool) -> list[Machine]:
    """The pool's machines that are not destroyed."""
    return [m for m in pool_machines(runtime, pool) if m.state != "destroyed"]
