"""Helpers of the @remote tests: reading the embedded runtime's emulator."""

from __future__ import annotations

from flyjobs._calls.runtime import Runtime
from flyjobs.machines import Machine


def machines(rt: Runtime) -> list[Machine]:
    """Every machine of the runtime's app, destroyed ones included."""
    app = rt.app
    assert app is not None
    return rt.portal.call(lambda: rt.client.list_machines(app, include_deleted=True))


def machine_of(rt: Runtime, machine_id: str | None) -> Machine:
    """One machine of the runtime's app (the test has checked the call has a machine)."""
    app = rt.app
    assert app is not None and machine_id is not None
    return rt.portal.call(lambda: rt.client.get_machine(app, machine_id))


def metadata(m: Machine) -> dict[str, str]:
    """A machine's metadata (every flyjobs machine has some)."""
    assert m.config is not None and m.config.metadata is not None
    return m.config.metadata
