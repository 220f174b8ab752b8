"""The metadata keys (``config.metadata``) on every machine flyjobs creates: `flyjobs ls`, `flyjobs
logs` and `flyjobs gc` find flyjobs' machines by these keys, and never touch a machine without
them."""

from __future__ import annotations

__all__ = (
    "META_BATCH_ID",
    "META_BATCH_SIZE",
    "META_CALL_ID",
    "META_CLIENT",
    "META_DEADLINE",
    "META_FUNCTION",
    "META_POOL",
    "META_SCHEDULE",
    "META_SCHEDULE_SPEC",
    "META_STANDBY",
    "META_STANDBY_IMAGE",
)

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
#: A standby machine (`flyjobs standby create`): its shape (``shared-1x-256mb``, or
#: ``size-<name>``) and its image. A claimed standby keeps both beside its call's keys.
META_STANDBY = "flyjobs_standby"
META_STANDBY_IMAGE = "flyjobs_standby_image"
