"""Protocol rules that cross components, kept in one place.

Imported by the worker runtime, so it must stay standard-library only and cheap to import.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "CALL_MARK_PREFIX",
    "DEFAULT_TIMEOUT_S",
    "DELIVERY_PROOF_HEADER",
    "ERROR_TRACEBACK_CHARS",
    "MAX_ERROR_LINE_BYTES",
    "EXIT_BAD_PAYLOAD",
    "EXIT_DEADLINE",
    "EXIT_DELIVERY_FAILED",
    "EXIT_IMPORT_FAILED",
    "EXIT_OK",
    "EXIT_RESULT_REFUSED",
    "EXIT_RESULT_TOO_LARGE",
    "IDLE_EXIT_GRACE_S",
    "LOG_GAP_PREFIX",
    "MAX_INBOX_RESULT_BYTES",
    "MAX_WAIT_S",
    "MACHINE_ROOT_ENV",
    "META_BATCH_ID",
    "META_BATCH_SIZE",
    "META_CALL_ID",
    "META_CLIENT",
    "META_DEADLINE",
    "META_FUNCTION",
    "META_POOL",
    "META_SCHEDULE",
    "META_SCHEDULE_SPEC",
    "NEXT_INPUT_WAIT_S",
    "PAYLOAD_GUEST_PATH",
    "RESERVED_ENV",
    "RESULT_KEY_ENV",
    "RESULT_NOT_SEALED",
    "RUN_RECORD_PREFIX",
    "SCHEDULE_INTERVALS_S",
    "TIME_ORIGIN_ENV",
    "TIME_SCALE_ENV",
    "WORKER_CMD",
    "WORKER_MODULE",
    "call_error",
    "error_line",
    "call_line",
    "call_mark",
    "delivery_proof",
    "importing_function",
    "log_gap_line",
    "may_mark",
    "parse_call_mark",
    "open_call_record",
    "open_record",
    "open_result",
    "result_mac",
    "seal_call_record",
    "seal_record",
    "seal_result",
    "set_importing_function",
    "keep_warm",
    "ticket_id",
)

#: The module every flyjobs machine runs (``python -m flyjobs.worker``): images, deployed
#: schedules and the emulator's fork server start it by this name, so it never moves.
WORKER_MODULE = "flyjobs.worker"
#: The ``init.cmd`` of every flyjobs machine.
WORKER_CMD = ("python", "-m", WORKER_MODULE)
#: Seconds a call (or a scheduled run) may take when its function sets no ``timeout_s``.
DEFAULT_TIMEOUT_S = 300.0

#: Absolute guest path of the call payload file (``config.files[].guest_path``).
PAYLOAD_GUEST_PATH = "/flyjobs/call.msgpack"

#: Environment variable through which the local emulator gives a machine process its root folder.
#: A machine on Fly has its own filesystem, so there the variable is unset and guest paths are
#: used as they are; in the emulator every guest path lives under this root. This is the
#: emulator's one documented deviation from Fly.
MACHINE_ROOT_ENV = "FLYJOBS_MACHINE_ROOT"

#: Variables the platform sets in every machine (Fly's runtime environment, plus the emulator's
#: root): neither ``config.env`` nor an app secret may name one. ``PRIMARY_REGION`` is not among
#: them, as ``fly.toml``'s ``primary_region`` sets it through ``env``.
RESERVED_ENV = frozenset(
    {
        "FLY_APP_NAME",
        "FLY_MACHINE_ID",
        "FLY_ALLOC_ID",
        "FLY_REGION",
        "FLY_PUBLIC_IP",
        "FLY_IMAGE_REF",
        "FLY_MACHINE_VERSION",
        "FLY_PRIVATE_IP",
        "FLY_PROCESS_GROUP",
        "FLY_VM_MEMORY_MB",
        MACHINE_ROOT_ENV,
    }
)

#: Seconds the inbox may hold a result delivery of a machine that takes more than one input
#: (a call envelope with ``pulls``) before it answers: ``200`` with the machine's next call
#: envelope as body, or ``204`` when the batch has no more work for it (the machine then exits).
#: It is the machine's idle period; the worker's read timeout for that answer is longer.
NEXT_INPUT_WAIT_S = 5.0
# A machine may run several calls at once (a warm pool's ``max_concurrency``): its first call
# envelope then lists, in ``concurrent``, the first call of each further slot (the pool's no-op
# `keep_warm` for a slot with nothing to do yet). Each slot is a pull loop of its own, with its
# own result URL, deadline and output tail, in one process. A slot ends alone when the inbox
# answers it with "no more work", when its call ran past its deadline, and when the inbox no
# longer has a ticket for its result (404, 410: the caller gave up on the call); the machine
# exits when every slot has ended (or every slot still running is past its deadline). Any
# other failure of a slot ends the machine, and the caller retries the calls its other slots
# held.

#: Seconds past its idle period (``idle_s``) by which a machine waiting for its next input has
#: ended itself, whatever happened to the caller: the worker's read timeout for the answer, and
#: its deadline while it waits (plus the deadline thread's one-second poll).
IDLE_EXIT_GRACE_S = 11.0

#: The longest ``timeout_s`` of a call and ``idle_s`` of a pool (30 days): the worker sets its
#: deadline watchdog (``faulthandler.dump_traceback_later``) that far ahead, which a platform
#: ``time_t`` bounds; a value past it (``1e12``, ``inf``) crashed the machine after its create.
MAX_WAIT_S = 30 * 86400.0

# Worker exit codes. 0 means a result was delivered (the function's own exception counts as a
# delivered result); each failure before or after that has its own code so the exit event alone
# tells the client what went wrong.
EXIT_OK = 0
EXIT_BAD_PAYLOAD = 65  # payload file missing, unreadable or not a flyjobs call (EX_DATAERR)
EXIT_IMPORT_FAILED = 66  # the function reference could not be imported
EXIT_DELIVERY_FAILED = 75  # the result could not be delivered (EX_TEMPFAIL)
EXIT_RESULT_TOO_LARGE = 73  # the result inbox refused the result as too large (HTTP 413)
#: The result inbox refused the result as not sealed with the caller's result key (its 403
#: answer is `RESULT_NOT_SEALED`): for a genuine worker, the app's ``FLYJOBS_RESULT_KEY``
#: secret is not the caller's ``FLYJOBS_RESULT_KEY`` (EX_NOPERM).
EXIT_RESULT_REFUSED = 77
#: The body of the inbox's 403 answer to a result not sealed with its result key.
RESULT_NOT_SEALED = "the result is not authenticated by the app's result key"

#: Largest result envelope (bytes) the caller's inbox accepts; a larger one needs the object
#: store (``FLYJOBS_STORE``), which takes results of any size.
MAX_INBOX_RESULT_BYTES = 64 * 1024 * 1024
EXIT_DEADLINE = 124  # the call's deadline passed inside the worker (as timeout(1) exits)

# Metadata (``config.metadata``) on every machine flyjobs creates; `flyjobs ls`, `flyjobs logs` and
# `flyjobs gc` find flyjobs' machines by these keys, and never touch a machine without them.
META_CALL_ID = "flyjobs_call_id"
META_BATCH_ID = "flyjobs_batch_id"  # empty for a call outside a batch
META_FUNCTION = "flyjobs_function"  # "module:qualname"
#: Unix time (whole seconds) by which the worker has ended itself; absent on machines meant to
#: outlive any call (scheduled ones).
META_DEADLINE = "flyjobs_deadline"
#: The process that created the machine: "<hostname>/<pid>/<process start, unix seconds>".
META_CLIENT = "flyjobs_client"
#: The warm pool a machine belongs to (`flyjobs.Pool`'s name); absent outside pools.
META_POOL = "flyjobs_pool"
#: The number of inputs of the machine's batch, when the map knew it (``len()``); absent else.
META_BATCH_SIZE = "flyjobs_batch_size"
#: A scheduled function's machine: its ``module:qualname``, and its schedule as ``flyjobs
#: schedule ls`` shows it (see `flyjobs._schedules.deploy`, which seals them).
META_SCHEDULE = "flyjobs_schedule"
META_SCHEDULE_SPEC = "flyjobs_schedule_spec"

#: The app secret (``fly secrets set``) from which the key that authenticates results is
#: derived. Machines read app secrets from their environment and the Machines API never shows
#: them in a machine's config, so someone who can read configs (and with them the result URL)
#: still cannot make a result the caller accepts. The caller has the same value in its own
#: environment. See docs/threat-model.md.
RESULT_KEY_ENV = "FLYJOBS_RESULT_KEY"

# A sealed result is the result envelope, this mark, then the MAC in 64 hex digits of the
# envelope and the ticket it is for (`ticket_id`).
# The MAC travels inside the body so that it survives an object store, which keeps no header.
_SEAL_MARK = b"\n-flyjobs-mac:"
_MAC_HEX_DIGITS = 64


#: What a MAC authenticates, kept apart: a sealed result is never accepted as a journal
#: record or a detached call's record, nor the other way round.
_RESULT = b"flyjobs-result"
_JOURNAL = b"flyjobs-journal"
_CALL_RECORD = b"flyjobs-call-rec"  # person is at most 16 bytes
_DELIVERY = b"flyjobs-delivery"

#: The request header in which a worker proves, before the body, that it holds the result key:
#: the inbox refuses an upload without it from its request head, so uploads by someone who only
#: knows the URL never hold a connection or memory for their body (docs/threat-model.md).
DELIVERY_PROOF_HEADER = "Flyjobs-Delivery-Proof"


def ticket_id(result_url: str) -> str:
    """The id a result's seal binds it to: a digest of the URL the result is delivered to.

    Every ticket (inbox or store) has a URL of its own, so a sealed result captured from one
    delivery is refused by every other ticket, even one for the same call id.
    """
    from _blake2 import blake2b  # lazy: keeps machines light

    return blake2b(result_url.encode(), digest_size=16).hexdigest()


def result_mac(secret: str, body: bytes, *, purpose: bytes = _RESULT, bound: str = "") -> str:
    """The hex MAC of `body`, bound to the name `bound` (what the body is for), under the key
    derived from the app secret `secret` for `purpose`.

    Keyed BLAKE2b, a MAC by design; from ``_blake2`` because ``hashlib`` loads OpenSSL, a few
    milliseconds of every machine's start.
    """
    from _blake2 import blake2b  # lazy: keeps machines light

    key = blake2b(secret.encode(), digest_size=32, person=purpose).digest()
    # `bound` never holds a NUL (URL digests, batch and call names): the split is unambiguous.
    mac = blake2b(bound.encode() + b"\0", key=key, digest_size=32)
    mac.update(body)
    return mac.hexdigest()


def delivery_proof(secret: str, path: str) -> str:
    """The `DELIVERY_PROOF_HEADER` value for a delivery to the inbox URL path `path` (no query):
    a MAC of the path under the result key. The path names one ticket (its token is fresh), so
    a proof is good for that ticket only."""
    return result_mac(secret, path.encode("utf-8", "surrogateescape"), purpose=_DELIVERY)


def seal_result(secret: str, body: bytes, *, ticket: str, purpose: bytes = _RESULT) -> bytes:
    """`body` (a result envelope) with its MAC under `secret` appended, as the worker sends it,
    bound to `ticket` (`ticket_id` of the URL it is delivered to)."""
    mac = result_mac(secret, body, purpose=purpose, bound=ticket)
    return body + _SEAL_MARK + mac.encode("ascii")


def open_result(
    secret: str, sealed: bytes, *, ticket: str, purpose: bytes = _RESULT
) -> bytes | None:
    """The result envelope inside `sealed`, or None unless its MAC under `secret`, bound to
    `ticket`, is right."""
    import hmac  # lazy: keeps machines light

    split = len(sealed) - _MAC_HEX_DIGITS - len(_SEAL_MARK)
    if split < 0 or sealed[split : split + len(_SEAL_MARK)] != _SEAL_MARK:
        return None
    body, mac = sealed[:split], sealed[split + len(_SEAL_MARK) :]
    expected = result_mac(secret, body, purpose=purpose, bound=ticket)
    if not hmac.compare_digest(mac, expected.encode("ascii")):
        return None
    return body


def seal_record(secret: str, name: str, data: bytes, *, purpose: bytes = _JOURNAL) -> bytes:
    """A record `data` the caller keeps in the object store under `name` (a batch journal's:
    its app, batch and input's key), sealed with the result key: the record cannot be forged,
    nor moved to another name."""
    return seal_result(secret, data, ticket=name, purpose=purpose)


def open_record(
    secret: str, name: str, sealed: bytes, *, purpose: bytes = _JOURNAL
) -> bytes | None:
    """The record inside `sealed` kept under `name`, or None unless it was sealed for it."""
    return open_result(secret, sealed, ticket=name, purpose=purpose)


def seal_call_record(secret: str, name: str, data: bytes) -> bytes:
    """A detached call's record `data`, sealed for `name` (its app and call id)."""
    return seal_record(secret, name, data, purpose=_CALL_RECORD)


def open_call_record(secret: str, name: str, sealed: bytes) -> bytes | None:
    """The detached call's record inside `sealed`, or None unless it was sealed for `name`."""
    return open_record(secret, name, sealed, purpose=_CALL_RECORD)


# The function reference the worker of this process is importing, while it does. A module that
# calls ``fn.remote()`` at top level (no ``if __name__ == "__main__":`` guard) would otherwise
# start the same script again in every machine, each starting the next.
_importing: list[str] = []


def set_importing_function(ref: str | None) -> None:
    """The worker is importing the function `ref` (None: it is done)."""
    _importing[:] = [] if ref is None else [ref]


def importing_function() -> str | None:
    """The function reference the worker of this process is importing, or None."""
    return _importing[0] if _importing else None


#: Seconds between runs of each Fly ``config.schedule`` value (a month is taken as 30 days).
SCHEDULE_INTERVALS_S = {
    "hourly": 3600.0,
    "daily": 86400.0,
    "weekly": 7 * 86400.0,
    "monthly": 30 * 86400.0,
}

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


#: The local emulator's ``--time-scale`` as machines see it: the emulator divides schedule
#: intervals by the scale, and gives every machine the scale and the emulator's start (unix s)
#: so that a scheduled worker's clock runs as fast. Unset on Fly (scale 1).
TIME_SCALE_ENV = "FLYJOBS_TIME_SCALE"
TIME_ORIGIN_ENV = "FLYJOBS_TIME_ORIGIN"


def keep_warm() -> None:
    """The call a warm pool's idle machine is given when its idle period ends and the pool
    keeps it (at ``min``, or while another of its slots is busy), and the first call of a slot
    that has no work yet: it does nothing, and delivering its result renews the wait for a call
    (a worker never waits for its next input longer than the call's ``idle_s``)."""
