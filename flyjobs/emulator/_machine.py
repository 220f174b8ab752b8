"""One machine's record: state, events, versions, lease, waiters, and its cached JSON.

States are exactly Fly's: ``created, starting, started, stopping, stopped, replacing,
destroying, destroyed``. Every change goes through `MachineRecord.set_state`, which records the
state as reached in the current run and settles the `/wait` requests it satisfies, at the
moment of the change (so a waiter never misses a state the machine only passed through).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import ErrorReply
from ._ids import now_ms, rfc3339, ulid
from ._output import MachineOutput
from ._process import ProcessHandle

__all__ = ("SETTLED_STATES", "SHOWN_EVENTS", "WAITABLE_STATES", "LeaseRecord", "MachineRecord")

#: States a machine rests in (``settled`` in a wait means any of them).
SETTLED_STATES = frozenset({"created", "started", "stopped", "suspended", "failed", "destroyed"})
#: Values ``/wait`` accepts for ``state``.
WAITABLE_STATES = frozenset(
    {
        "created", "starting", "started", "stopping", "stopped", "replacing", "destroying",
        "destroyed", "suspended", "failed", "settled",
    }
)  # fmt: skip
#: Events the API shows (the machine body, ``/events``): Fly's events ``limit`` is at most 50.
SHOWN_EVENTS = 50
#: Events kept per machine, newest first: waits with ``from_event_id`` look further back than
#: the API shows (a crash-looping machine passes 50 events in minutes).
_KEPT_EVENTS = 1000


@dataclass(slots=True)
class LeaseRecord:
    """A machine lease. ``expires_at`` is Unix seconds (float here, whole seconds on the wire)."""

    nonce: str
    expires_at: float
    owner: str
    description: str
    version: str

    def live(self) -> bool:
        """True until the lease expires."""
        return time.time() < self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """The lease as Fly's ``data`` object."""
        return {
            "nonce": self.nonce,
            "expires_at": int(self.expires_at),
            "owner": self.owner,
            "description": self.description,
            "version": self.version,
        }


@dataclass(eq=False, slots=True)
class _Waiter:
    states: frozenset[str]
    future: asyncio.Future[str]
    version: str | None


@dataclass(eq=False, slots=True)
class MachineRecord:
    """A machine and everything the emulator tracks about it."""

    id: str
    name: str
    app_name: str
    region: str
    private_ip: str
    config: dict[str, Any]
    version: str
    machine_dir: Path
    secrets: dict[str, str]
    #: What its processes printed (and the emulator's notes), read by the logs API.
    output: MachineOutput
    #: Its place among its app's machines, in creation order (0 for the first).
    serial: int = 0
    state: str = "created"
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)
    versions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lease: LeaseRecord | None = None
    cordoned: bool = False
    #: The running process tree, if any.
    handle: ProcessHandle | None = None
    #: What the user asked of the current run: "stop", "restart", "replace" or "destroy".
    pending: str | None = None
    #: Restarts made by the restart policy since the last start by the user.
    restart_count: int = 0
    #: The pending spawn of a run that is ``starting``.
    boot_timer: asyncio.Handle | None = None
    schedule_timer: asyncio.TimerHandle | None = None
    #: States reached in the current run → event id. A run begins with each start, stop,
    #: restart or update asked by the user, so a wait never answers from before that request.
    reached: dict[str, str | None] = field(default_factory=dict)
    #: States reached by replaced versions, for waits pinned to an old version.
    old_versions: dict[str, frozenset[str]] = field(default_factory=dict)
    _waiters: set[_Waiter] = field(default_factory=set)
    _cache: dict[tuple[bool, bool], bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.versions.append((self.version, self.config))
        self.reached[self.state] = None

    # State and events -----------------------------------------------------------------------

    def set_state(
        self,
        state: str,
        event: tuple[str, str] | None = None,
        request: dict[str, Any] | None = None,
    ) -> None:
        """Move to ``state``, optionally recording an event (type, source), and settle waiters."""
        event_id = self.add_event(event[0], state, event[1], request) if event else None
        self.state = state
        self.updated_at = time.time()
        self.reached[state] = event_id
        self._cache.clear()
        for waiter in list(self._waiters):
            if waiter.version not in (None, self.version):
                continue
            if _matches(state, waiter.states):
                self._settle(waiter, state)
            elif state == "failed" and "started" in waiter.states:
                self._settle(waiter, self._failed_to_start(waiter.states))
            elif state == "destroyed":
                self._settle(waiter, ErrorReply(404, f"machine {self.id} was destroyed"))

    def add_event(
        self, type_: str, status: str, source: str, request: dict[str, Any] | None = None
    ) -> str:
        """Record an event (newest first, at most 1000 kept) and return its id."""
        event: dict[str, Any] = {
            "id": ulid(),
            "type": type_,
            "status": status,
            "source": source,
            "timestamp": now_ms(),
        }
        if request is not None:
            event["request"] = request
        self.events.insert(0, event)
        del self.events[_KEPT_EVENTS:]
        self._cache.clear()
        return str(event["id"])

    def new_run(self) -> None:
        """Forget the states reached so far (the user asked to start, stop, restart or update)."""
        self.reached.clear()
        self.restart_count = 0

    def replace_version(self, version: str, config: dict[str, Any]) -> None:
        """Make ``version`` with ``config`` current; waits pinned to the old one are settled."""
        old = self.version
        reached = set(self.reached)
        if "started" in reached:
            reached.add("stopped")  # the old instance was stopped to be replaced
        self.old_versions[old] = frozenset(reached | {"replaced"})
        self.version = version
        self.config = config
        self.versions.append((version, config))
        self.new_run()
        self._cache.clear()
        for waiter in list(self._waiters):
            if waiter.version == old:
                self._settle(waiter, self._old_version_answer(old, waiter.states))

    def touch(self) -> None:
        """Invalidate the cached JSON after a change that is not a state change."""
        self.updated_at = time.time()
        self._cache.clear()

    # Waiting --------------------------------------------------------------------------------

    async def wait_for(
        self,
        states: frozenset[str],
        *,
        version: str | None,
        from_event_id: str | None,
        timeout_s: float,
    ) -> str:
        """Wait until the machine reaches one of ``states``; return the state reached.

        A state already reached in the current run counts, so a short-lived machine that has
        gone from ``started`` to ``stopped`` still satisfies a wait for ``started``.

        :raises ErrorReply: 408 on timeout; 404 if the machine is destroyed without reaching
            the state; 400 for a version that is not this machine's, and for a wait for
            ``started`` once the launch failed (the machine is ``failed``).
        """
        if version == self.version:
            version = None
        if version is not None:
            if version not in self.old_versions:
                raise ErrorReply(400, f"machine {self.id} has no version {version}")
            answer = self._old_version_answer(version, states)
            if isinstance(answer, ErrorReply):
                raise answer
            return answer
        reached = self._already_reached(states, from_event_id)
        if reached is not None:
            return reached
        if self.state == "destroyed":
            raise ErrorReply(404, f"machine {self.id} was destroyed")
        if self.state == "failed" and "started" in states:
            raise self._failed_to_start(states)
        waiter = _Waiter(states, asyncio.get_running_loop().create_future(), None)
        self._waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter.future
        except TimeoutError:
            wanted = ",".join(sorted(states))
            raise ErrorReply(
                408,
                "deadline_exceeded: machine failed to reach desired state, "
                f"{wanted}, currently {self.state}",
            ) from None
        finally:
            self._waiters.discard(waiter)

    def _failed_to_start(self, states: frozenset[str]) -> ErrorReply:
        # Fly answers a wait for "started" at once when the launch failed: the machine rests
        # in "failed" until someone starts, updates or destroys it.
        wanted = ",".join(sorted(states))
        return ErrorReply(
            400,
            f"failed_precondition: machine failed to reach desired state, {wanted}, "
            f"currently {self.state}",
        )

    def fail_waiters(self, error: ErrorReply) -> None:
        """Answer every pending wait with ``error`` (the emulator is stopping)."""
        for waiter in list(self._waiters):
            self._settle(waiter, error)

    def _already_reached(self, states: frozenset[str], from_event_id: str | None) -> str | None:
        if _matches(self.state, states):
            return self.state
        if from_event_id is not None:
            for event in self.events:
                if event["id"] == from_event_id:
                    return None
                if _matches(event["status"], states):
                    return str(event["status"])
            return None
        for state in reversed(self.reached):
            if _matches(state, states):
                return state
        return None

    def _old_version_answer(self, version: str, states: frozenset[str]) -> str | ErrorReply:
        for state in self.old_versions[version]:
            if _matches(state, states):
                return state
        return ErrorReply(400, f"machine version {version} was replaced")

    def _settle(self, waiter: _Waiter, outcome: str | ErrorReply) -> None:
        self._waiters.discard(waiter)
        if waiter.future.done():
            return
        if isinstance(outcome, ErrorReply):
            waiter.future.set_exception(outcome)
        else:
            waiter.future.set_result(outcome)

    # Serialization --------------------------------------------------------------------------

    def live_lease(self) -> LeaseRecord | None:
        """The lease, if one is held and not expired."""
        if self.lease is not None and not self.lease.live():
            self.lease = None
        return self.lease

    def json(self, *, summary: bool = False, include_lease: bool = False) -> bytes:
        """The machine as the API returns it, serialized (cached until the next change)."""
        lease = self.live_lease() if include_lease else None
        key = (summary, lease is not None)
        cached = self._cache.get(key)
        if cached is None or lease is not None:
            cached = json.dumps(self.to_dict(summary=summary, lease=lease)).encode()
            self._cache[key] = cached
        return cached

    def to_dict(
        self,
        *,
        summary: bool = False,
        lease: LeaseRecord | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """The machine as the API returns it, at ``version`` (default: the current one).

        :raises KeyError: the machine never had ``version``.
        """
        version = self.version if version is None else version
        config = self.config if version == self.version else dict(self.versions)[version]
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "region": self.region,
            "instance_id": version,
            "version": version,
            "private_ip": self.private_ip,
            "image_ref": _image_ref(config["image"]),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }
        if not summary:
            body["config"] = config
            body["events"] = self.events[:SHOWN_EVENTS]
            body["host_status"] = "ok"
            body["cordoned"] = self.cordoned
        if lease is not None:
            body["lease"] = {
                "owner": lease.owner,
                "expires_at": int(lease.expires_at),
                "description": lease.description,
            }
        return body


def _matches(state: str, wanted: Iterable[str]) -> bool:
    return state in wanted or ("settled" in wanted and state in SETTLED_STATES)


def _image_ref(image: str) -> dict[str, Any]:
    """An ``image_ref`` for an image that was recorded, never pulled (the digest is made up)."""
    name, _, digest = image.partition("@")
    repository, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = name.rsplit(":", 1)
    registry = "registry-1.docker.io"
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    return {
        "registry": registry,
        "repository": repository,
        "tag": tag,
        "digest": digest or "sha256:" + hashlib.sha256(image.encode()).hexdigest(),
        "labels": {},
    }
