"""Helpers of the @remote tests: reading the embedded runtime's emulator."""

from __future__ import annotations

from typing import Any

from flyjobs._runtime import Runtime


def machines(rt: Runtime) -> list[Any]:
    """Every machine of the runtime's app, destroyed ones included."""
    app = rt.app
    assert app is not None
    return rt.portal.call(lambda: rt.client.list_machines(app, include_deleted=True))
