"""What calls printed, read back through Fly's logs API (``flyjobs logs``).

A machine's stdout and stderr are the platform's logs: the worker writes each line through, so
everything a call prints can be read while it runs and after it ends (while the service retains
it; the local emulator keeps a machine's whole output until the machine is forgotten).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import anyio

from ._jobs import JobMachine, list_jobs
from .machines import MachinesClient

__all__ = ("OutputNotFoundError", "jobs_of", "read_output")

#: Machine states after which a machine prints nothing more.
_FINAL_STATES = frozenset({"stopped", "destroyed", "failed", "suspended"})
#: Pages read in one go before the next round (bounds one round's work on a chatty app).
_MAX_PAGES_PER_ROUND = 1000


class OutputNotFoundError(LookupError):
    """No flyjobs machine carries the call or batch id asked for."""


def jobs_of(jobs: list[JobMachine], ident: str) -> list[JobMachine]:
    """The machines of call ``ident`` (its retries included) or of batch ``ident``."""
    retry = re.compile(re.escape(ident) + r"-r\d+")
    return [j for j in jobs if ident in (j.call_id, j.batch_id) or retry.fullmatch(j.call_id)]


async def read_output(
    client: MachinesClient,
    app: str,
    ident: str,
    emit: Callable[[JobMachine, str], None],
    *,
    follow: bool = False,
    poll_s: float = 0.5,
    appear_s: float = 60.0,
    on_wait: Callable[[], None] | None = None,
) -> list[JobMachine]:
    """Pass every line the machines of call or batch ``ident`` printed to ``emit``, in order per
    machine; return those machines.

    With ``follow``, keep reading (every ``poll_s`` seconds) until every machine of ``ident``
    has stopped or been destroyed, picking up machines that appear meanwhile; the first one
    may take up to ``appear_s`` seconds to appear (a call waiting for its turn in the pool);
    ``on_wait`` is called once if it is not there at first.

    :raises OutputNotFoundError: no machine of ``app`` carries that id (in time).
    """
    token: str | None = None
    give_up = anyio.current_time() + (appear_s if follow else 0.0)
    while True:
        jobs = jobs_of(await list_jobs(client, app, include_deleted=True), ident)
        if not jobs and anyio.current_time() < give_up:
            if on_wait is not None:
                on_wait()
                on_wait = None
            await anyio.sleep(poll_s)
            continue
        if not jobs:
            raise OutputNotFoundError(
                f"no flyjobs machine of app {app!r} has call or batch id {ident!r} (destroyed"
                " machines are listed only for a while; `flyjobs ls` shows the live ones)"
            )
        finished = all(j.state in _FINAL_STATES for j in jobs)
        by_id = {j.id: j for j in jobs}
        # Read after the listing: a machine seen finished has all its lines in the logs now.
        for _ in range(_MAX_PAGES_PER_ROUND):
            page = await client.get_logs(app, next_token=token)
            for entry in page.entries:
                job = by_id.get(entry.instance or "")
                if job is not None:
                    emit(job, entry.message)
            token = page.next_token or token
            if not page.entries:
                break
        if not follow or finished:
            return jobs
        await anyio.sleep(poll_s)
