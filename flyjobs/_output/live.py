"""Live remote output: the lines calls print reach this process's stdout while they run.

A machine's stdout and stderr are the platform's logs. For each app with calls in flight one
follower polls Fly's logs API (every `POLL_S` seconds, and at once when a call ends) and writes
each line of a watched machine to ``sys.stdout`` as ``[call_id] line``. On a machine that runs
many calls (a batch's, a pool's) the worker's call marks say which call a line is from
(`flyjobs._output.call_lines`); the marks themselves are not shown. Lines of a machine seen before
its call registered it (its create answer had not arrived yet) are held briefly and shown at
registration, and if there were too many to hold, a line says how many were not shown and names
``flyjobs logs CALL_ID``. Where the logs service dropped lines before they were read (the local
emulator says so in a line of its own), that line is shown too. When a call ends, one more poll
collects its last lines before its value is returned; a call whose machine printed nothing costs
no request.

If the logs cannot be read (the token may not read logs, the service fails), the call shows the
tail its result carried instead, with a marker naming ``flyjobs logs CALL_ID`` where it is cut.

Every live line goes to stdout, also those the function wrote to stderr: an entry of Fly's logs
API (``timestamp, message, level, instance, region, meta``, as fly-go and flyctl read it) has no
field naming the stream its line came from, so there is nothing to route by (and the emulator
serves none either). The tail shown when the logs cannot be read keeps the two streams apart, as
the result carries them apart.
"""

from __future__ import annotations

import collections
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from .._exceptions import APIError, AuthenticationError, ForbiddenError, TransportError
from .._wire.log_lines import may_mark
from ..machines import MachinesClient
from .call_lines import CallLines, Piece, shown

__all__ = ("POLL_S", "LiveOutput", "cut_marker", "missed_marker")

logger = logging.getLogger("flyjobs.output")

#: Seconds between polls of the logs API while calls run.
POLL_S = 0.5
#: Seconds a call's end waits for its last lines before showing its result's tail instead.
_DRAIN_TIMEOUT_S = 5.0
#: Seconds to wait after a failed poll before the next one.
_BACKOFF_S = 2.0
#: Pages read in one poll at most (a poll must end so that calls waiting on it can go on).
_MAX_PAGES = 200
#: Lines held per machine not (yet) watched, and machines held.
_HELD_LINES = 5000
_HELD_MACHINES = 64
#: Machines whose call marks (and lines not held) are remembered.
_MACHINES_FOLLOWED = 4096


def cut_marker(call_id: str) -> str:
    """The line shown where a call's output is cut."""
    return f"[{call_id}] [output cut; all of it: flyjobs logs {call_id}]"


def missed_marker(call_id: str, count: int) -> str:
    """The line shown in place of ``count`` lines of a call that were not shown live."""
    return f"[{call_id}] [{count} earlier lines not shown; all of them: flyjobs logs {call_id}]"


@dataclass
class _Watch:
    call_id: str
    complete: bool = True
    #: the machine runs this call only: a mark naming another call is a line like any other
    single: bool = False
    #: the machine runs inputs of this batch only: a mark naming a call outside it is a line
    batch_id: str = ""


class _AppFollower:
    """Polls one app's logs while any of its machines is watched."""

    def __init__(self, client: MachinesClient, app: str, write: Callable[[str], None]) -> None:
        self.client = client
        self.app = app
        self.write = write
        self.token: str | None = None
        #: The most lines a page of the logs API has held (its page size, once one was full).
        self.page_lines = 0
        self.watched: dict[str, _Watch] = {}
        self.lines: collections.OrderedDict[str, CallLines] = collections.OrderedDict()
        self.held: collections.OrderedDict[str, collections.deque[Piece]] = (
            collections.OrderedDict()
        )
        #: Lines of machines not watched yet that could not be held, per machine.
        self.missed: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.running = False
        self.broken = False
        self.started_rounds = 0
        self.done_rounds = 0
        self.round_done = anyio.Event()
        self.wake = anyio.Event()

    def watch(self, machine_id: str, call_id: str, single: bool, batch_id: str) -> None:
        self.watched[machine_id] = _Watch(
            call_id, complete=not self.broken, single=single, batch_id=batch_id
        )
        missed = self.missed.pop(machine_id, 0)
        if missed:
            self.write(missed_marker(call_id, missed) + "\n")
        for call, line, _mark in self.held.pop(machine_id, ()):
            self.write(f"[{call_id if single else call or call_id}] {shown(line)}\n")

    async def drain(self, machine_id: str) -> bool:
        """Wait for a poll that starts from now on to end; True if the machine's output was
        followed with no gap."""
        if self.broken or machine_id not in self.watched:
            return False
        wanted = self.started_rounds + 1
        self.wake.set()
        with anyio.move_on_after(_DRAIN_TIMEOUT_S):
            while self.done_rounds < wanted and not self.broken:
                await self.round_done.wait()
        watch = self.watched.get(machine_id)
        return self.done_rounds >= wanted and watch is not None and watch.complete

    async def run(self) -> None:
        try:
            while self.watched and not self.broken:
                self.started_rounds += 1
                self.wake = anyio.Event()
                try:
                    await self._poll()
                    pause = POLL_S
                except (AuthenticationError, ForbiddenError) as exc:
                    logger.warning("live output off: cannot read the logs of %s: %s", self.app, exc)
                    self.broken = True
                    pause = 0.0
                except (APIError, TransportError) as exc:
                    logger.warning("reading the logs of %s failed: %s", self.app, exc)
                    for watch in self.watched.values():
                        watch.complete = False
                    pause = _BACKOFF_S
                except Exception:
                    # Never let the output take the runtime down: calls show their tails.
                    logger.exception("live output of %s stopped", self.app)
                    self.broken = True
                    pause = 0.0
                self.done_rounds += 1
                self.round_done.set()
                self.round_done = anyio.Event()
                with anyio.move_on_after(pause):
                    await self.wake.wait()
        finally:
            self.running = False
            self.round_done.set()

    async def _poll(self) -> None:
        for _ in range(_MAX_PAGES):
            page = await self.client.get_logs(self.app, next_token=self.token)
            for entry in page.entries:
                self._route(entry.instance or "", entry.message)
            self.token = page.next_token or self.token
            # A page shorter than the longest one seen held all the service had: the rest is
            # for the next poll (reading on while lines trickle in would spin on the API).
            if len(page.entries) < max(self.page_lines, 1):
                return
            self.page_lines = len(page.entries)

    def _route(self, machine_id: str, text: str) -> None:
        lines = self.lines.get(machine_id)
        if lines is None:
            if len(self.lines) >= _MACHINES_FOLLOWED:
                self.lines.popitem(last=False)
            lines = self.lines[machine_id] = CallLines(
                accepts=lambda call_id: self._may_mark(machine_id, call_id)
            )
        for piece in lines.feed(text):
            if piece.mark:
                continue
            watch = self.watched.get(machine_id)
            if watch is not None:
                self.write(f"[{piece.call or watch.call_id}] {shown(piece.text)}\n")
            else:
                self._hold(machine_id, piece)

    def _may_mark(self, machine_id: str, call_id: str) -> bool:
        watch = self.watched.get(machine_id)
        if watch is None:
            return True
        # As `flyjobs logs` reads the machine's metadata: a pool's machine may mark any call.
        pool = "" if watch.single or watch.batch_id else "pool"
        return may_mark(call_id, own_call_id=watch.call_id, batch_id=watch.batch_id, pool=pool)

    def _hold(self, machine_id: str, piece: Piece) -> None:
        held = self.held.get(machine_id)
        if held is None:
            if len(self.held) >= _HELD_MACHINES:
                evicted, lines = self.held.popitem(last=False)
                self._missed(evicted, len(lines))
            held = self.held[machine_id] = collections.deque(maxlen=_HELD_LINES)
        if len(held) == held.maxlen:
            self._missed(machine_id, 1)
        held.append(piece)

    def _missed(self, machine_id: str, count: int) -> None:
        if machine_id not in self.missed and len(self.missed) >= _MACHINES_FOLLOWED:
            self.missed.popitem(last=False)
        self.missed[machine_id] = self.missed.get(machine_id, 0) + count


class LiveOutput:
    """The followers of one runtime, one per app with calls in flight."""

    def __init__(
        self, client: MachinesClient, tasks: TaskGroup, write: Callable[[str], None] | None = None
    ) -> None:
        self._client = client
        self._tasks = tasks
        self._write = write or _write_stdout
        self._followers: dict[str, _AppFollower] = {}

    def watch(
        self, app: str, machine_id: str, call_id: str, *, single: bool = False, batch_id: str = ""
    ) -> None:
        """Show the lines of ``machine_id`` as ``[call_id] line`` from now on (and those it
        printed already). With ``single``, the machine runs that call only: its lines are all
        that call's, whatever call marks they hold; otherwise (a batch's or pool's machine)
        the worker's marks tell which call each line is from: with ``batch_id`` (a batch's
        machine) only marks naming an input of that batch, any other being a line of the call
        that wrote it (`flyjobs._wire.log_lines.may_mark`, as ``flyjobs logs`` reads them)."""
        follower = self._followers.get(app)
        if follower is None:
            follower = self._followers[app] = _AppFollower(self._client, app, self._write)
        follower.watch(machine_id, call_id, single, batch_id)
        if not follower.running and not follower.broken:
            follower.running = True
            self._tasks.start_soon(follower.run)

    async def finish(self, app: str, machine_id: str, *, printed: bool) -> bool:
        """Stop watching ``machine_id``, after collecting its last lines if it ``printed``;
        True when all its output was shown (live), False when the caller should show the tail
        its result carried."""
        follower = self._followers.get(app)
        if follower is None:
            return False
        try:
            if not printed:
                watch = follower.watched.get(machine_id)
                return watch is not None and watch.complete
            return await follower.drain(machine_id)
        finally:
            self.forget(app, machine_id)

    def forget(self, app: str, machine_id: str) -> None:
        """Stop watching ``machine_id`` (idempotent)."""
        follower = self._followers.get(app)
        if follower is not None:
            follower.watched.pop(machine_id, None)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
