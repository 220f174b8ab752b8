"""Machine leases: an exclusive hold on changing a machine, proven by a nonce.

While a lease is live, every change to the machine must carry its nonce in the
``fly-machine-lease-nonce`` header; without it (or with a stale one) the answer is 409.
"""

from __future__ import annotations

import datetime as dt
import time

from ._errors import ErrorReply, bad_request
from ._ids import new_nonce
from ._machine import LeaseRecord, MachineRecord

__all__ = (
    "DEFAULT_TTL_S",
    "MAX_TTL_S",
    "NONCE_HEADER",
    "acquire",
    "check",
    "lease_not_found",
    "release",
)

NONCE_HEADER = "fly-machine-lease-nonce"
#: Lease time to live when the request gives none, in seconds.
DEFAULT_TTL_S = 30
#: The longest lease time to live accepted, in seconds (a year). Fly's Go server keeps a
#: lease's expiry as a time.Duration, which overflows near 292 years; a bound well inside it
#: keeps every expiry a printable date.
MAX_TTL_S = 365 * 24 * 3600


def acquire(
    machine: MachineRecord, *, ttl_s: int, description: str, nonce: str | None, owner: str
) -> LeaseRecord:
    """Take a new lease, or refresh the live one when ``nonce`` is its nonce.

    :raises ErrorReply: 400 unless ``0 < ttl_s <= MAX_TTL_S``; 409 while another holder's
        lease is live.
    """
    if not 0 < ttl_s <= MAX_TTL_S:
        raise bad_request(f"invalid ttl: must be between 1 and {MAX_TTL_S} seconds")
    lease = machine.live_lease()
    expires_at = time.time() + ttl_s
    if lease is not None:
        if nonce != lease.nonce:
            raise held_error(machine, lease)
        lease.expires_at = expires_at
        if description:
            lease.description = description
    else:
        lease = LeaseRecord(new_nonce(), expires_at, owner, description, machine.version)
        machine.lease = lease
    machine.touch()
    return lease


def check(machine: MachineRecord, nonce: str | None) -> None:
    """Allow a change to ``machine`` only if no lease is live or ``nonce`` is its nonce.

    :raises ErrorReply: 409 with Fly's lease body otherwise.
    """
    lease = machine.live_lease()
    if lease is not None and nonce != lease.nonce:
        raise held_error(machine, lease)


def release(machine: MachineRecord, nonce: str | None) -> None:
    """Drop the live lease whose nonce is ``nonce``.

    :raises ErrorReply: 404 ("lease not found") when no lease is live; 409 when ``nonce`` is
        not its nonce.
    """
    lease = machine.live_lease()
    if lease is None:
        raise lease_not_found()
    if nonce != lease.nonce:
        raise held_error(machine, lease)
    machine.lease = None
    machine.touch()


def lease_not_found() -> ErrorReply:
    """404 for a machine without a live lease, in Fly's words (flyctl recognises the absence
    of a lease by the text ``lease not found``)."""
    return ErrorReply(404, "lease not found")


def held_error(machine: MachineRecord, lease: LeaseRecord) -> ErrorReply:
    """409 in the shape of Fly's lease conflict (``status``/``message``/``code``) plus ``error``."""
    until = dt.datetime.fromtimestamp(int(lease.expires_at), dt.UTC)
    message = (
        f"machine ID {machine.id} lease currently held by {lease.owner}, "
        f"expires at {until:%Y-%m-%d %H:%M:%S} +0000 UTC"
    )
    return ErrorReply(409, message, code="error", extra={"message": message, "code": "invalid"})
