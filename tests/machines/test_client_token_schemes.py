"""The token scheme the client sends, as fly-go's ``tokens`` package decides it, against an
emulator that accepts both schemes."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import httpx
import pytest
from _spec import SpecCheckingTransport

from flyjobs.emulator import RunningEmulator
from flyjobs.machines import MachinesClient

pytestmark = pytest.mark.anyio


class _Recording(SpecCheckingTransport):
    """Forwards to the emulator; keeps the ``Authorization`` header of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.headers["authorization"])
        return await super().handle_async_request(request)


MAC = "fm2_" + "m" * 40


@pytest.mark.parametrize(
    ("token", "accepted", "header"),
    [
        # fly-go's tokens.Parse: fm1a_, fm1r_ and fm2_ tokens are macaroons, sent as FlyV1.
        ("fm1a_" + "a" * 40, "fm1a_" + "a" * 40, "FlyV1 fm1a_" + "a" * 40),
        ("fm1r_" + "r" * 40, "fm1r_" + "r" * 40, "FlyV1 fm1r_" + "r" * 40),
        ("FlyV1 " + MAC, MAC, "FlyV1 " + MAC),
        # `fly tokens create` prints a comma-joined list; mixed with a user token, FlapsHeader
        # sends only the macaroons.
        (f"{MAC},fm2_second", f"{MAC},fm2_second", f"FlyV1 {MAC},fm2_second"),
        (f"{MAC},fo1_user", MAC, f"FlyV1 {MAC}"),
        # Anything else is a bearer token.
        ("plain-user-token", "plain-user-token", "Bearer plain-user-token"),
        ("Bearer fo1_user", "fo1_user", "Bearer fo1_user"),
    ],
)
async def test_tokens_go_under_fly_gos_scheme(
    make_emulator: Callable[..., RunningEmulator], token: str, accepted: str, header: str
) -> None:
    emu = make_emulator(tokens=[accepted])
    recording = _Recording()
    async with MachinesClient(token, base_url=emu.url, transport=recording) as fly:
        await fly.create_app(f"t-{secrets.token_hex(4)}")
    assert recording.sent and set(recording.sent) == {header}
