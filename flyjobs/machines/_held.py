"""Which machine leases the current context holds.

The nonce of a lease held by ``async with client.lease(...)`` lives in a context variable keyed
by (client, app, machine id). Every method of that client that acts on the machine reads it and
sends ``fly-machine-lease-nonce``, so calls made inside the block, or in tasks started inside it
(they inherit the context), need no extra argument, while calls elsewhere in the program, or
through another client, are unaffected. A method's explicit ``nonce=`` argument wins over the
held one.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import MappingProxyType

from ._response_models import Lease

__all__ = ("HeldLease", "held_nonce", "hold", "unhold")

Held = Mapping[tuple[object, str, str], "HeldLease"]


@dataclass(slots=True)
class HeldLease:
    """A lease held by an ``async with client.lease(...)`` block.

    :ivar nonce: the value of ``fly-machine-lease-nonce`` (sent for you inside the block).
    :ivar expires_at: Unix time in seconds, as of the last refresh.
    :ivar lost: a refresh found the lease gone; calls with its nonce will be refused.
    """

    app: str
    machine_id: str
    nonce: str
    expires_at: int | None
    lease: Lease
    lost: bool = False


_HELD: ContextVar[Held] = ContextVar("flyjobs_machines_held_leases", default=MappingProxyType({}))


def held_nonce(client: object, app: str, machine_id: str) -> str | None:
    """The nonce of the lease ``client`` holds on this machine in the current context, if any."""
    held = _HELD.get().get((client, app, machine_id))
    return held.nonce if held is not None else None


def hold(client: object, lease: HeldLease) -> Token[Held]:
    """Make ``client`` send ``lease``'s nonce in the current context; undo with `unhold`."""
    key = (client, lease.app, lease.machine_id)
    return _HELD.set(MappingProxyType({**_HELD.get(), key: lease}))


def unhold(token: Token[Held]) -> None:
    """Undo the `hold` that returned ``token``."""
    _HELD.reset(token)
