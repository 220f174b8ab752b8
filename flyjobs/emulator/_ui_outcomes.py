"""What the dashboard tells from machines' output: batch inputs done and failed, scheduled runs.

A machine's exit code does not say whether a function failed: the worker delivers the
function's exception as a result and exits 0. What does say is the worker's own lines:

- a batch machine's call marks (`flyjobs._wire.log_lines.call_mark`) and error lines
  (`flyjobs._wire.log_lines.call_error`): an input whose call wrote an error line before its end
  mark failed, one that ended without one succeeded. Retries of an input (``ID-rN``) count as
  that input: it failed only if no attempt succeeded. A machine that runs one input writes no
  marks; it has finished its input once it has stopped. A mark naming a call the machine may
  not run (`flyjobs._wire.log_lines.may_mark`) is not counted.
- a scheduled machine's run records (`flyjobs._wire.log_lines.RUN_RECORD_PREFIX`), with each run's
  status (``ok``, ``failed``, ...) and error.

Each refresh reads only the lines it has not read yet.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .._wire.log_lines import RUN_RECORD_PREFIX, may_mark, parse_call_mark
from .._wire.metadata import META_BATCH_ID, META_CALL_ID, META_POOL
from ._machine import MachineRecord

__all__ = ("BatchCounts", "Outcomes", "ScheduledRun")

#: Runs of a scheduled machine kept (the latest).
_RUNS_KEPT = 5
_FINISHED = frozenset({"stopped", "destroyed", "failed"})
_RETRY = re.compile(r"-r\d+$")


@dataclass(frozen=True)
class ScheduledRun:
    """One run a scheduled machine's worker recorded: when its record was written (unix ms),
    its status and, for a failure, ``Type: message``."""

    at_ms: int
    status: str
    error: str


@dataclass(frozen=True)
class BatchCounts:
    """A batch's inputs as its machines' output tells them."""

    done: int
    failed: int


@dataclass
class _Seen:
    after: int = 0
    marks: bool = False
    #: call id -> "running", "ok" or "failed"
    calls: dict[str, str] = field(default_factory=dict)
    errored: set[str] = field(default_factory=set)
    runs: collections.deque[ScheduledRun] = field(
        default_factory=lambda: collections.deque(maxlen=_RUNS_KEPT)
    )


class Outcomes:
    """The outcomes read so far from each machine's output."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def batch(self, machines: list[MachineRecord]) -> BatchCounts:
        """The inputs done and failed of the batch whose machines are ``machines``."""
        inputs: dict[str, set[str]] = {}
        for machine in machines:
            seen = self._read(machine)
            calls = dict(seen.calls)
            own = _meta(machine, META_CALL_ID)
            if not seen.marks and machine.state in _FINISHED and own:
                calls[own] = "failed" if own in seen.errored else "ok"
            for call_id, outcome in calls.items():
                inputs.setdefault(_RETRY.sub("", call_id), set()).add(outcome)
        finished = [outcomes - {"running"} for outcomes in inputs.values()]
        return BatchCounts(
            done=sum(1 for outcomes in finished if outcomes),
            failed=sum(1 for outcomes in finished if outcomes == {"failed"}),
        )

    def runs(self, machine: MachineRecord) -> list[ScheduledRun]:
        """The latest runs a scheduled machine recorded, newest first."""
        return list(reversed(self._read(machine).runs))

    def forget_others(self, machines: Iterable[MachineRecord]) -> None:
        """Forget the machines not among ``machines`` (gone from the emulator)."""
        keep = {machine.id for machine in machines}
        self._seen = {k: v for k, v in self._seen.items() if k in keep}

    def _read(self, machine: MachineRecord) -> _Seen:
        seen = self._seen.setdefault(machine.id, _Seen())
        lines, seen.after = machine.output.read(seen.after, 1 << 62)
        own = {
            "own_call_id": _meta(machine, META_CALL_ID),
            "batch_id": _meta(machine, META_BATCH_ID),
            "pool": _meta(machine, META_POOL),
        }
        for line in lines:
            if line.text.startswith(RUN_RECORD_PREFIX):
                run = _run(line.at_ms, line.text[len(RUN_RECORD_PREFIX) :])
                if run is not None:
                    seen.runs.append(run)
                continue
            mark = parse_call_mark(line.text)
            if mark is None or mark[0] == "line" or not may_mark(mark[1], **own):
                continue
            kind, call_id, _text = mark
            if kind == "error":
                seen.errored.add(call_id)
            elif kind == "start":
                seen.marks = True
                seen.calls[call_id] = "running"
            else:
                seen.marks = True
                seen.calls[call_id] = "failed" if call_id in seen.errored else "ok"
        return seen


def _run(at_ms: int, record: str) -> ScheduledRun | None:
    try:
        fields = json.loads(record)
        status = str(fields["status"])
        error = fields.get("error") or {}
        text = f"{error['type']}: {error['message']}" if error else ""
    except (ValueError, KeyError, TypeError):
        return None  # only looks like a record
    return None if status == "pending" else ScheduledRun(at_ms, status, text)


def _meta(machine: MachineRecord, key: str) -> str:
    value = (machine.config.get("metadata") or {}).get(key, "")
    return value if isinstance(value, str) else ""
