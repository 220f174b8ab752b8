"""Protocol rules that cross components, kept in one place.

Imported by the worker runtime, so it must stay standard-library only and cheap to import.
"""

from __future__ import annotations

__all__ = (
    "EXIT_BAD_PAYLOAD",
    "EXIT_DEADLINE",
    "EXIT_DELIVERY_FAILED",
    "EXIT_IMPORT_FAILED",
    "EXIT_OK",
    "EXIT_RESULT_TOO_LARGE",
    "MAX_INBOX_RESULT_BYTES",
    "MACHINE_ROOT_ENV",
    "META_BATCH_ID",
    "META_CALL_ID",
    "META_CLIENT",
    "META_DEADLINE",
    "META_FUNCTION",
    "PAYLOAD_GUEST_PATH",
    "RESERVED_ENV",
)

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

# Worker exit codes. 0 means a result was delivered (the function's own exception counts as a
# delivered result); each failure before or after that has its own code so the exit event alone
# tells the client what went wrong.
EXIT_OK = 0
EXIT_BAD_PAYLOAD = 65  # payload file missing, unreadable or not a flyjobs call (EX_DATAERR)
EXIT_IMPORT_FAILED = 66  # the function reference could not be imported
EXIT_DELIVERY_FAILED = 75  # the result could not be delivered (EX_TEMPFAIL)
EXIT_RESULT_TOO_LARGE = 73  # the result inbox refused the result as too large (HTTP 413)

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
