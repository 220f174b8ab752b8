"""What calls printed, read back through Fly's logs API (``flyjobs logs``).

A machine's stdout and stderr are the platform's logs: the worker writes each line through, so
everything a call prints can be read while it runs and after it ends, while the service retains
it (Fly keeps a recent window; the local emulator keeps the last ``log_max_bytes`` of each
machine and says where it dropped lines).

A machine that ran one call is found by its metadata (``flyjobs_call_id``). A batch's or a pool's
machine runs many calls, and its metadata names the machine: there, the worker's call marks tell
which lines are a call's (`flyjobs._output.call_lines`), so a call is found on whichever machines
ran it, its retries on other machines included.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable

import anyio

from .._calls.fleet import JobMachine, list_jobs
from .._wire.log_lines import LOG_GAP_PREFIX
from ..machines import MachinesClient
from .call_lines import CallLines, Piece

__all__ = ("OutputNotFoundError", "error_lines", "read_output")

#: Machine states after which a machine prints nothing more.
_FINAL_STATES = frozenset({"stopped", "destroyed", "failed", "suspended"})
#: Pages read in one go before the next round (bounds one round's work on a chatty app).
_MAX_PAGES_PER_ROUND = 1000
#: Lines kept of machines not listed yet (created after the round's listing), and machines.
_UNLISTED_LINES = 10_000
_UNLISTED_MACHINES = 64


class OutputNotFoundError(LookupError):
    """No flyjobs machine carries or ran the call or batch id asked for."""


class _Reader:
    """The state of one `read_output`: which lines are the id's, and whether it is over."""

    def __init__(self, ident: str, emit: Callable[[JobMachine, str, str], None]) -> None:
        self.ident = ident
        self.emit = emit
        self.retry = re.compile(re.escape(ident) + r"-r\d+")
        self.lines: dict[str, CallLines] = {}
        #: Machines that ran (a part of) the call: True once their part has ended.
        self.ran: dict[str, bool] = {}
        self.found = False
        self.gaps = 0
        self.unlisted: collections.OrderedDict[str, collections.deque[str]] = (
            collections.OrderedDict()
        )

    def is_call(self, call_id: str) -> bool:
        return call_id == self.ident or self.retry.fullmatch(call_id) is not None

    def listed(self, jobs: list[JobMachine]) -> None:
        for job in jobs:
            if self.is_call(job.call_id) or job.batch_id == self.ident:
                self.found = True
                self.ran.setdefault(job.id, False)
            for text in self.unlisted.pop(job.id, ()):
                self.line(job, text)

    def unknown(self, machine_id: str, text: str) -> None:
        kept = self.unlisted.get(machine_id)
        if kept is None:
            if len(self.unlisted) >= _UNLISTED_MACHINES:
                self.unlisted.popitem(last=False)
            kept = self.unlisted[machine_id] = collections.deque(maxlen=_UNLISTED_LINES)
        kept.append(text)

    def line(self, job: JobMachine, text: str) -> None:
        if text.startswith(LOG_GAP_PREFIX):
            self.gaps += 1
        lines = self.lines.get(job.id)
        if lines is None:
            lines = self.lines[job.id] = CallLines(hold_after_gap=True, accepts=job.may_run)
        self.pieces(job, lines.feed(text))

    def end(self, job: JobMachine) -> None:
        """``job`` has finished: what it held after a gap is its own."""
        lines = self.lines.get(job.id)
        if lines is not None:
            self.pieces(job, lines.flush())

    def pieces(self, job: JobMachine, pieces: list[Piece]) -> None:
        whole_batch = job.batch_id == self.ident
        for call, text, mark in pieces:
            call_id = call or job.call_id
            if mark == "error":
                if whole_batch or self.is_call(call_id):
                    for line in error_lines(text):
                        self.emit(job, call_id, line)
                continue
            if mark:
                if self.is_call(call_id):
                    self.found = True
                    self.ran[job.id] = mark == "end"
                continue
            if whole_batch or self.is_call(call_id):
                self.emit(job, call_id, text)

    def over(self, jobs: list[JobMachine]) -> bool:
        """Every machine that ran the id has ended its part, or stopped."""
        finished = {j.id for j in jobs if j.state in _FINAL_STATES}
        return all(done or m in finished for m, done in self.ran.items())


async def read_output(
    client: MachinesClient,
    app: str,
    ident: str,
    emit: Callable[[JobMachine, str, str], None],
    *,
    follow: bool = False,
    poll_s: float = 0.5,
    appear_s: float = 60.0,
    on_wait: Callable[[], None] | None = None,
) -> None:
    """Pass every line that call or batch ``ident`` printed to ``emit(machine, call_id,
    line)``, in order per machine; ``call_id`` is the call that printed the line (for a batch,
    each input's; for a call, the call or one of its retries, ``ident-rN``). A batch's
    machines' own lines (outside any input's marks) come with the machine's call id.

    With ``follow``, keep reading (every ``poll_s`` seconds) until every machine that runs
    ``ident`` has stopped or ended its part, picking up machines that appear meanwhile; the
    id may take up to ``appear_s`` seconds to appear (a call waiting for its turn in the pool);
    ``on_wait`` is called once if it is not there at first.

    :raises OutputNotFoundError: no machine of ``app`` carries or ran that id (in time), or
        ``ident`` is empty (machines outside any batch have an empty batch id).
    """
    if not ident.strip():
        raise OutputNotFoundError(
            "give a call id (fj-…) or a batch id (fjb-…), as `flyjobs ls` shows them"
        )
    reader = _Reader(ident, emit)
    token: str | None = None
    page_lines = 0  # the most lines a page has held
    give_up = anyio.current_time() + (appear_s if follow else 0.0)
    while True:
        jobs = await list_jobs(client, app, include_deleted=True)
        reader.listed(jobs)
        by_id = {j.id: j for j in jobs}
        finished = [j for j in jobs if j.state in _FINAL_STATES]
        # Read after the listing: a machine seen finished has all its lines in the logs now.
        for _ in range(_MAX_PAGES_PER_ROUND):
            page = await client.get_logs(app, next_token=token)
            for entry in page.entries:
                machine_id = entry.instance or ""
                job = by_id.get(machine_id)
                if job is not None:
                    reader.line(job, entry.message)
                else:
                    reader.unknown(machine_id, entry.message)
            token = page.next_token or token
            # A page shorter than the longest one seen held all there was (see
            # flyjobs._output.live).
            if len(page.entries) < max(page_lines, 1):
                break
            page_lines = len(page.entries)
        for job in finished:
            reader.end(job)
        if reader.found and (not follow or reader.over(jobs)):
            return
        if not reader.found:
            if not follow or anyio.current_time() >= give_up:
                raise OutputNotFoundError(_not_found(app, ident, reader.gaps))
            if on_wait is not None:
                on_wait()
                on_wait = None
        await anyio.sleep(poll_s)


def error_lines(error_json: str) -> list[str]:
    """The lines showing the exception of a call's error line
    (`flyjobs._wire.log_lines.call_error`): a line naming it, then its remote traceback."""
    try:
        error = json.loads(error_json)
        kind, message = str(error["type"]), str(error["message"])
        trace = str(error.get("traceback") or "")
    except (ValueError, KeyError, TypeError):
        return [error_json]  # not the worker's: shown as it is
    head = f"[flyjobs] the call raised {kind}: {message}"
    return [*head.splitlines(), *(["Remote traceback:", *trace.splitlines()] if trace else [])]


def _not_found(app: str, ident: str, gaps: int) -> str:
    message = (
        f"no flyjobs machine of app {app!r} has or ran call or batch id {ident!r} (destroyed"
        " machines are listed only for a while; `flyjobs ls` shows the live ones)"
    )
    if gaps:
        message += (
            f"; the logs service dropped earlier lines of {gaps} machine(s), and its output"
            " may have been among them"
        )
    return message
