"""What a flyjobs machine is, as the worker and the caller both read it: the command it runs, where
its payload lies, the environment names the platform reserves, how long it may wait, and the exit
code that tells the caller how it ended."""

from __future__ import annotations

__all__ = (
    "DEFAULT_TIMEOUT_S",
    "EXIT_BAD_PAYLOAD",
    "EXIT_DEADLINE",
    "EXIT_DELIVERY_FAILED",
    "EXIT_IMPORT_FAILED",
    "EXIT_OK",
    "EXIT_RESULT_REFUSED",
    "EXIT_RESULT_TOO_LARGE",
    "IDLE_EXIT_GRACE_S",
    "CODE_GUEST_DIR",
    "MACHINE_ROOT_ENV",
    "MAX_INBOX_RESULT_BYTES",
    "MAX_WAIT_S",
    "NEXT_INPUT_WAIT_S",
    "PAYLOAD_GUEST_PATH",
    "RESERVED_ENV",
    "SCHEDULE_INTERVALS_S",
    "TIME_ORIGIN_ENV",
    "TIME_SCALE_ENV",
    "WORKER_CMD",
    "WORKER_MODULE",
    "importing_function",
    "keep_warm",
    "set_importing_function",
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
#: Absolute guest folder of code bundles: ``<sha256>.zip`` files carried in the config, and the
#: ``<sha256>/`` folders the worker unpacks them into (see `flyjobs._machine_side.code`).
CODE_GUEST_DIR = "/flyjobs/code"

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
#: answer is `flyjobs._wire.seal.RESULT_NOT_SEALED`): for a genuine worker, the app's
#: ``FLYJOBS_RESULT_KEY`` secret is not the caller's ``FLYJOBS_RESULT_KEY`` (EX_NOPERM).
EXIT_RESULT_REFUSED = 77
EXIT_DEADLINE = 124  # the call's deadline passed inside the worker (as timeout(1) exits)

#: Largest result envelope (bytes) the caller's inbox accepts; a larger one needs the object
#: store (``FLYJOBS_STORE``), which takes results of any size.
MAX_INBOX_RESULT_BYTES = 64 * 1024 * 1024


#: The local emulator's ``--time-scale`` as machines see it: the emulator divides schedule
#: intervals by the scale, and gives every machine the scale and the emulator's start (unix s)
#: so that a scheduled worker's clock runs as fast. Unset on Fly (scale 1).
TIME_SCALE_ENV = "FLYJOBS_TIME_SCALE"
TIME_ORIGIN_ENV = "FLYJOBS_TIME_ORIGIN"


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


def keep_warm() -> None:
    """The call a warm pool's idle machine is given when its idle period ends and the pool
    keeps it (at ``min``, or while another of its slots is busy), and the first call of a slot
    that has no work yet: it does nothing, and delivering its result renews the wait for a call
    (a worker never waits for its next input longer than the call's ``idle_s``)."""
