"""The lines a machine writes that a reader parses back: call marks and call lines (which call
printed a line), a call's error line, a scheduled run's record, the emulator's gap line."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "CALL_MARK_PREFIX",
    "ERROR_TRACEBACK_CHARS",
    "LOG_GAP_PREFIX",
    "MAX_ERROR_LINE_BYTES",
    "RUN_RECORD_PREFIX",
    "call_error",
    "call_line",
    "call_mark",
    "error_line",
    "log_gap_line",
    "may_mark",
    "parse_call_mark",
)

#: A scheduled run's worker writes its outcome as one line of the machine's log: this prefix,
#: then a JSON object (see `flyjobs._machine_side.scheduled_run`). ``flyjobs schedule ls`` reads
#: these lines back through the logs API, so a run's outcome needs no live client.
RUN_RECORD_PREFIX = "flyjobs-run "

#: A machine that may run more than one call (a batch's or a pool's: its call has ``pulls``,
#: ``then`` or a ``batch_id``) marks each call's part of its output, as its metadata names the
#: machine and not each call; ``flyjobs logs CALL_ID`` and the caller's live output read these
#: marks (see `flyjobs._output.call_lines`). Its worker writes the line ``flyjobs-call start
#: CALL_ID`` to stdout before the call's first line, and ``flyjobs-call end CALL_ID`` after its
#: last, before its result is delivered (a call that ends with no result has no end mark). Where
#: calls of one process run at the same time, so that their lines interleave, each line of a call is
#: written as ``flyjobs-call CALL_ID: text`` instead. Lines outside any call's marks are the
#: machine's own (the worker's messages between calls). A call id never contains a space or a
#: colon.
CALL_MARK_PREFIX = "flyjobs-call "


def call_mark(kind: str, call_id: str) -> str:
    """The line marking the ``kind`` (``"start"`` or ``"end"``) of call ``call_id``'s output."""
    return f"{CALL_MARK_PREFIX}{kind} {call_id}"


#: Characters of a traceback kept in a call's error line (its last ones: the innermost frames).
ERROR_TRACEBACK_CHARS = 8000
#: Bytes of a line carrying an exception (a call's error line, a scheduled run's record) at
#: most: a logs service cuts longer lines (the emulator at 16 KiB), and a cut one reads as none.
MAX_ERROR_LINE_BYTES = 12_000


def error_line(prefix: str, fields: dict[str, Any], error: dict[str, Any] | None) -> str:
    """``prefix`` then ``fields`` as JSON, within `MAX_ERROR_LINE_BYTES`: ``error`` (the dict
    of an exception among ``fields``, or ``fields`` itself) has its traceback, then its
    message, cut to fit, keeping the traceback's last characters."""
    import json  # lazy: keeps machines light

    while True:
        line = prefix + json.dumps(fields, default=str)
        if len(line.encode()) <= MAX_ERROR_LINE_BYTES or error is None:
            return line
        trace, message = str(error.get("traceback") or ""), str(error.get("message") or "")
        if trace:
            error["traceback"] = trace[len(trace) // 2 + 1 :]
        elif message:
            error["message"] = message[: len(message) // 2]
        else:
            return line


def call_error(call_id: str, kind: str, message: str, traceback: str) -> str:
    """The line ``flyjobs-call error CALL_ID {json}`` a worker writes when call ``call_id``
    raised (before its end mark): the exception's type, message and formatted traceback (its
    last `ERROR_TRACEBACK_CHARS` characters, all within `MAX_ERROR_LINE_BYTES`), so that
    ``flyjobs logs`` shows them after the result has gone to the caller. Live output leaves it
    out: the caller has the exception."""
    error = {"type": kind, "message": message, "traceback": traceback[-ERROR_TRACEBACK_CHARS:]}
    return error_line(f"{CALL_MARK_PREFIX}error {call_id} ", error, error)


def call_line(call_id: str, text: str) -> str:
    """A line ``text`` of call ``call_id``, written while other calls of the process run."""
    return f"{CALL_MARK_PREFIX}{call_id}: {text}"


def may_mark(call_id: str, *, own_call_id: str, batch_id: str, pool: str) -> bool:
    """Whether a machine whose metadata names ``own_call_id``, ``batch_id`` and ``pool`` may
    mark call ``call_id``'s output: a pool's machine any call (its metadata cannot tell which
    calls of the pool it took), a batch's machine only inputs of that batch (their ids are
    ``BATCH_ID-INDEX``, a retry's ``-rN`` after it), any other machine only its own call."""
    if pool:
        return True
    if batch_id:
        return call_id.startswith(batch_id + "-")
    return call_id == own_call_id


def parse_call_mark(line: str) -> tuple[str, str, str] | None:
    """``(kind, call_id, text)`` of a line the worker wrote for a call: ``("start", id, "")``,
    ``("end", id, "")``, ``("error", id, json)`` (`call_error`), or ``("line", id, text)``;
    None for any other line."""
    if not line.startswith(CALL_MARK_PREFIX):
        return None
    head, _, rest = line[len(CALL_MARK_PREFIX) :].partition(" ")
    if head in ("start", "end") and rest and " " not in rest and ":" not in rest:
        return head, rest, ""
    if head == "error":
        call_id, _, error = rest.partition(" ")
        if call_id and ":" not in call_id and error.startswith("{"):
            return "error", call_id, error
    if head.endswith(":") and len(head) > 1:
        return "line", head[:-1], rest
    return None


#: The local emulator's logs API serves a line starting with this where a reader would miss lines
#: of a machine that it no longer keeps (it keeps the last ``log_max_bytes`` of each machine's
#: output): `log_gap_line`. Fly's logs API has no such line; what it no longer keeps is missed
#: without a mark.
LOG_GAP_PREFIX = "[flyjobs emulator: "


def log_gap_line(count: int, max_bytes: int) -> str:
    """The line served in place of ``count`` lines the emulator dropped."""
    return (
        f"{LOG_GAP_PREFIX}{count} earlier lines of this machine were dropped: it keeps the last"
        f" {max_bytes} bytes of each machine's output (flyjobs dev --log-max-bytes)]"
    )
