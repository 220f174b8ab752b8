"""`EmulatorConfig`: every knob of the local Machines API emulator, in one frozen value object.

Each field's description is also its ``flyjobs dev`` option's help text.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ("EmulatorConfig",)


#: Fly's public regions (fly.io/docs/reference/regions, 2026).
FLY_REGIONS = (
    "ams", "arn", "bom", "cdg", "dfw", "ewr", "fra", "gru", "iad",
    "jnb", "lax", "lhr", "nrt", "ord", "sin", "sjc", "syd", "yyz",
)  # fmt: skip


class EmulatorConfig(BaseModel):
    """Settings of one emulator instance. All faults and Fly's limits are off by default.

    Durations are in seconds (``_s``), rates are fractions in ``[0, 1]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: list[str] = Field(
        default_factory=list,
        description="Accepted bearer tokens. Empty: one random token is generated at start.",
        repr=False,  # a secret: never in a repr, a log line or an error
    )
    host: str = Field(
        default="127.0.0.1",
        description="Interface to listen on. Only the token guards the API: keep it local.",
    )
    port: int = Field(default=0, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    default_region: str = Field(
        default="lcl", description="Region of machines created without one."
    )
    regions: list[str] = Field(
        default_factory=lambda: list(FLY_REGIONS),
        description="Region codes a machine may be created in, besides default_region "
        "(default: Fly's regions, fly.io/docs/reference/regions).",
    )
    org_slug: str = Field(default="personal", description="Organization slug of apps.")
    lease_owner: str = Field(
        default="local@flyjobs.dev", description="Owner recorded on leases (Fly: the user)."
    )
    pass_env: list[str] = Field(
        default_factory=list,
        description="Host environment variables machines also get. By default they get only "
        "PATH, HOME, USER, LOGNAME, SHELL, LANG, LANGUAGE, LC_*, TZ, TMPDIR, TERM, "
        "LD_LIBRARY_PATH, VIRTUAL_ENV, CONDA_PREFIX, SSL_CERT_FILE, SSL_CERT_DIR and PYTHON*, "
        "never the host's credentials.",
    )
    image_commands: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Image name (exact, or without tag/digest) -> argv run when the machine "
        "config names no command.",
    )
    retention_s: float = Field(
        default=600.0, ge=0, description="Seconds a destroyed machine stays readable, then 404."
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        description="Schedule intervals (hourly...) are divided by this; machines get it "
        "in FLYJOBS_TIME_SCALE so a scheduled worker's clock runs as fast.",
    )
    time_origin: float | None = Field(
        default=None,
        description="Unix time (s) the scaled clock starts from (machines get it in "
        "FLYJOBS_TIME_ORIGIN); default: when the emulator starts.",
    )
    rate_limits: bool = Field(
        default=False, description="Answer with Fly's per-action limits (429 + Retry-After)."
    )
    rate_per_s: float = Field(
        default=1.0, gt=0, description="Requests per second per action and machine (or app)."
    )
    rate_burst: int = Field(default=3, ge=1, description="Burst per action and machine (or app).")
    get_rate_per_s: float = Field(
        default=5.0, gt=0, description="Get Machine requests per second per machine."
    )
    get_rate_burst: int = Field(default=10, ge=1, description="Get Machine burst per machine.")
    latency_s: float = Field(default=0.0, ge=0, description="Seconds added before every answer.")
    create_latency_s: float = Field(
        default=0.0,
        ge=0,
        description="Seconds more before a machine create is made and answered, as a cold "
        "image pull or a capacity search can take on Fly (over 30 s).",
    )
    restart_backoff_s: float = Field(
        default=0.05,
        ge=0,
        description="Seconds before a restart by the restart policy; doubles with each "
        "restart since the user last started the machine, up to restart_backoff_max_s.",
    )
    restart_backoff_max_s: float = Field(
        default=2.0, ge=0, description="Longest wait before a restart by the restart policy."
    )
    boot_delay_s: float = Field(
        default=0.0, ge=0, description="Seconds a machine spends starting before its process runs."
    )
    resume_delay_s: float = Field(
        default=0.1,
        ge=0,
        description="Seconds a suspended machine spends starting before its frozen process "
        "continues (Fly resumes from a snapshot in a few hundred milliseconds).",
    )
    cold_resume_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Fraction of resumes that cold-boot instead, as Fly may (suspend is not "
        "durable): the frozen process is killed and a new run starts, after resume_delay_s "
        "plus boot_delay_s.",
    )
    error_rate: float = Field(
        default=0.0, ge=0, le=1, description="Fraction of requests answered 5xx, unhandled."
    )
    drop_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Fraction of requests whose connection is closed without an answer; for "
        "changes, half of the drops happen after the change was made.",
    )
    seed: int | None = Field(default=None, description="Seed of the fault dice (reproducible).")
    data_dir: Path | None = Field(
        default=None,
        description="Folder for machine roots and logs (default: a temporary folder, in "
        "/dev/shm when possible, removed at stop).",
    )
    memory_poll_s: float = Field(
        default=0.075, gt=0, description="Seconds between checks of guest.memory_mb."
    )
    failing_images: list[str] = Field(
        default_factory=list,
        description="Images whose machines fail to launch, as one Fly cannot pull would: they "
        "end failed without running.",
    )
    keep_failed: bool = Field(
        default=False,
        description="A machine whose launch failed stays failed even with auto_destroy, as "
        "Fly may leave it (off: it is destroyed).",
    )
    default_stop_timeout_s: float = Field(
        default=5.0, ge=0, description="Seconds a stop waits after its signal before SIGKILL."
    )
    default_exec_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds an exec may run when the request sets none."
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted; a larger one is answered 413 before it is "
        "read (Fly documents no limit).",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Connections held at once; at the cap a new one evicts the oldest idle one "
        "(default: half the process's descriptor limit, 64 to 4096).",
    )
    head_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a new connection has to send its request head."
    )
    keep_alive_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a connection is kept for its next request after an answer.",
    )
    body_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a request body may go without sending a byte."
    )
    log_page_lines: int = Field(default=1000, ge=1, description="Log lines per logs answer.")
    log_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Bytes of output kept in memory per machine; older lines are dropped.",
    )
    apps: list[str] = Field(
        default_factory=list, description="Apps that exist from the start (in org_slug)."
    )
    fork_server: bool = Field(
        default=True,
        description="Start python -m flyjobs.worker machines by forking an interpreter that has "
        "already started and imported the worker (about 1 ms instead of 20 ms; Linux). Off: "
        "every machine is a fresh process.",
    )
    ui: bool = Field(
        default=False,
        description="Serve the dev dashboard at /ui/ (its URL, carrying its key, is printed).",
    )
