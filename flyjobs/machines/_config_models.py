"""Pydantic models of a machine's configuration (Fly's ``fly.MachineConfig`` and its parts).

Each model is named after its schema in Fly's OpenAPI spec (``fly.MachineGuest`` →
`MachineGuest`). Every field is optional unless Fly requires it; unset fields are left out of the
request (``exclude_none``), so Fly's defaults apply.

Unknown keys are kept (``extra="allow"``) in both directions: a field a newer Fly returns survives
a read-modify-write `MachinesClient.update_machine`, and a caller can set a Fly field this version
does not model yet. Values the caller builds are checked locally (see `_validation`); values parsed
from Fly's answers are not.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._validation import (
    check_absolute_path,
    check_base64,
    check_choice,
    check_env,
    check_range,
    duration_seconds,
    from_server,
    to_go_duration,
)

__all__ = (
    "DNSConfig",
    "EnvFrom",
    "MachineCheck",
    "MachineConfig",
    "MachineFile",
    "MachineGuest",
    "MachineHTTPHeader",
    "MachineInit",
    "MachineMetrics",
    "MachineMount",
    "MachinePort",
    "MachineProcess",
    "MachineRestart",
    "MachineRootfs",
    "MachineSecret",
    "MachineService",
    "MachineServiceConcurrency",
    "StopConfig",
)

#: Longest ``stop_config.timeout`` Fly accepts.
MAX_STOP_TIMEOUT_S = 300.0
#: Guest memory is allocated in steps of this many MB.
MEMORY_STEP_MB = 256

STOP_SIGNALS = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM")


def _one_of(*choices: str) -> AfterValidator:
    def check(value: str | None, info: ValidationInfo) -> str | None:
        return check_choice(value, choices, info)

    return AfterValidator(check)


#: An environment map whose names and values a process can be given (no ``=``/NUL in names).
_Environment = Annotated[dict[str, str] | None, AfterValidator(check_env)]


def _in_range(low: int, high: int | None = None) -> AfterValidator:
    # Not pydantic's ge/le: those would apply to Fly's answers too, which are not re-checked.
    def check(value: int | None, info: ValidationInfo) -> int | None:
        return check_range(value, low, high, info)

    return AfterValidator(check)


#: A duration: seconds as a number, or a Go duration string (``"10s"``, ``"1m30s"``).
GoDuration = Annotated[str, BeforeValidator(to_go_duration)]
AbsolutePath = Annotated[str, AfterValidator(check_absolute_path)]
Port = Annotated[int, _in_range(1, 65535)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_api(self) -> dict[str, Any]:
        """The JSON body Fly expects: unset (``None``) fields left out, extra keys kept."""
        return self.model_dump(mode="json", exclude_none=True)


class MachineGuest(_Model):
    """CPU and memory of the VM (``fly.MachineGuest``). Fly's default: 1 shared CPU, 256 MB."""

    cpu_kind: Annotated[str | None, _one_of("shared", "performance")] = None
    cpus: Annotated[int | None, _in_range(1)] = None
    #: Memory in MB, a multiple of 256.
    memory_mb: int | None = None
    gpu_kind: str | None = None
    gpus: Annotated[int | None, _in_range(0)] = None
    kernel_args: list[str] | None = None
    host_dedication_id: str | None = None

    @field_validator("memory_mb")
    @classmethod
    def _memory_step(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None or from_server(info):
            return value
        if value <= 0 or value % MEMORY_STEP_MB:
            raise ValueError(f"must be a positive multiple of {MEMORY_STEP_MB}, not {value}")
        return value


class MachineInit(_Model):
    """Overrides of the image's entrypoint, command and init (``fly.MachineInit``)."""

    exec: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    tty: bool | None = None
    swap_size_mb: Annotated[int | None, _in_range(0)] = None
    kernel_args: list[str] | None = None


class MachineRestart(_Model):
    """What happens when the main process exits (``fly.MachineRestart``).

    ``auto_destroy`` only takes effect with ``policy="no"``; Fly's default policy is
    ``on-failure`` (up to 10 restarts in 5 minutes).
    """

    policy: Annotated[str | None, _one_of("no", "always", "on-failure")] = None
    max_retries: Annotated[int | None, _in_range(0)] = None


class MachineFile(_Model):
    """A file written into the machine before it boots (``fly.File``).

    Exactly one source: ``raw_value`` (base64 of the contents), ``secret_name`` (an app secret
    holding base64 contents) or ``image_config``.
    """

    guest_path: AbsolutePath
    raw_value: Annotated[str | None, AfterValidator(check_base64)] = None
    secret_name: str | None = None
    image_config: str | None = None
    #: Permission bits as accepted by chmod(2), e.g. ``0o600``.
    mode: Annotated[int | None, _in_range(0, 0o7777)] = None

    @classmethod
    def from_bytes(cls, guest_path: str, data: bytes, *, mode: int | None = None) -> Self:
        """A file whose contents are ``data`` (base64-encoded into ``raw_value``)."""
        return cls(guest_path=guest_path, raw_value=base64.b64encode(data).decode(), mode=mode)

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> Self:
        sources = [self.raw_value, self.secret_name, self.image_config]
        if not from_server(info) and sum(s is not None for s in sources) != 1:
            raise ValueError(
                "exactly one of raw_value, secret_name or image_config must be set "
                f"for the file at guest_path {self.guest_path!r}"
            )
        return self


class MachineHTTPHeader(_Model):
    """One header of an HTTP check (``fly.MachineHTTPHeader``)."""

    name: str
    values: list[str]


class MachineCheck(_Model):
    """A health check (``fly.MachineCheck``; also used for ``services[].checks``)."""

    type: Annotated[str | None, _one_of("tcp", "http")] = None
    port: Port | None = None
    interval: GoDuration | None = None
    timeout: GoDuration | None = None
    grace_period: GoDuration | None = None
    method: str | None = None
    path: str | None = None
    protocol: Annotated[str | None, _one_of("http", "https")] = None
    tls_server_name: str | None = None
    tls_skip_verify: bool | None = None
    headers: list[MachineHTTPHeader] | None = None
    #: Top-level checks only: ``informational`` or ``readiness``.
    kind: Annotated[str | None, _one_of("informational", "readiness")] = None


class MachinePort(_Model):
    """A public port of a service and its handlers (``fly.MachinePort``)."""

    port: Port | None = None
    start_port: Port | None = None
    end_port: Port | None = None
    #: Connection handlers, e.g. ``["tls", "http"]``.
    handlers: list[str] | None = None
    force_https: bool | None = None
    tls_options: dict[str, Any] | None = None
    http_options: dict[str, Any] | None = None
    proxy_proto_options: dict[str, Any] | None = None


class MachineServiceConcurrency(_Model):
    """Load-balancing limits of a service (``fly.MachineServiceConcurrency``)."""

    type: Annotated[str | None, _one_of("connections", "requests")] = None
    soft_limit: Annotated[int | None, _in_range(0)] = None
    hard_limit: Annotated[int | None, _in_range(0)] = None


class MachineService(_Model):
    """A network service routed by the Fly proxy (``fly.MachineService``)."""

    protocol: Annotated[str | None, _one_of("tcp", "udp")] = None
    internal_port: Port | None = None
    ports: list[MachinePort] | None = None
    concurrency: MachineServiceConcurrency | None = None
    checks: list[MachineCheck] | None = None
    autostart: bool | None = None
    #: ``"off"``, ``"stop"`` or ``"suspend"`` (older servers use a boolean).
    autostop: str | bool | None = None
    min_machines_running: Annotated[int | None, _in_range(0)] = None


class EnvFrom(_Model):
    """An environment variable set from a machine field (``fly.EnvFrom``)."""

    env_var: str
    field_ref: Annotated[str, _one_of("id", "version", "app_name", "private_ip", "region", "image")]


class MachineSecret(_Model):
    """An app secret exposed to a process (``fly.MachineSecret``)."""

    env_var: str
    name: str | None = None


class MachineProcess(_Model):
    """One of several processes run in the VM (``fly.MachineProcess``)."""

    name: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    exec: list[str] | None = None
    env: _Environment = None
    env_from: list[EnvFrom] | None = None
    user: str | None = None
    secrets: list[MachineSecret] | None = None
    ignore_app_secrets: bool | None = None


class MachineMount(_Model):
    """A volume mounted into the VM (``fly.MachineMount``)."""

    volume: str | None = None
    path: AbsolutePath
    name: str | None = None
    size_gb: Annotated[int | None, _in_range(1)] = None
    encrypted: bool | None = None
    size_gb_limit: Annotated[int | None, _in_range(1)] = None
    add_size_gb: Annotated[int | None, _in_range(1)] = None
    extend_threshold_percent: Annotated[int | None, _in_range(0, 100)] = None


class MachineMetrics(_Model):
    """The endpoint Fly's Prometheus scrapes (``fly.MachineMetrics``)."""

    port: Port
    path: str
    https: bool | None = None


class StopConfig(_Model):
    """How the machine is stopped (``fly.StopConfig``). ``timeout`` is at most 5 minutes."""

    signal: Annotated[str | None, _one_of(*STOP_SIGNALS)] = None
    timeout: GoDuration | None = None

    @field_validator("timeout")
    @classmethod
    def _at_most_5_minutes(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not from_server(info):
            if duration_seconds(value) > MAX_STOP_TIMEOUT_S:
                raise ValueError(f"cannot exceed 5 minutes, got {value!r}")
        return value


class DNSConfig(_Model):
    """DNS settings of the VM (``fly.DNSConfig``)."""

    skip_registration: bool | None = None
    hostname: str | None = None
    hostname_fqdn: str | None = None
    nameservers: list[str] | None = None
    searches: list[str] | None = None
    options: list[dict[str, Any]] | None = None
    dns_forward_rules: list[dict[str, Any]] | None = None


class MachineRootfs(_Model):
    """Root filesystem persistence (``fly.MachineRootfs``)."""

    persist: Annotated[str | None, _one_of("never", "always", "restart")] = None
    size_gb: Annotated[int | None, _in_range(1)] = None


class MachineConfig(_Model):
    """The full configuration of a machine (``fly.MachineConfig``). Only ``image`` is required.

    Fly has no partial updates: `MachinesClient.update_machine` sends the whole config.
    """

    image: str
    env: _Environment = None
    init: MachineInit | None = None
    guest: MachineGuest | None = None
    #: A named size such as ``"shared-cpu-2x"``; deprecated by Fly, exclusive with ``guest``.
    size: str | None = None
    #: Destroy the machine once its main process exits (needs ``restart.policy="no"``).
    auto_destroy: bool | None = None
    restart: MachineRestart | None = None
    services: list[MachineService] | None = None
    #: Named top-level health checks.
    checks: dict[str, MachineCheck] | None = None
    processes: list[MachineProcess] | None = None
    #: Run the machine ``hourly``, ``daily``, ``weekly`` or ``monthly``.
    schedule: Annotated[str | None, _one_of("hourly", "daily", "weekly", "monthly")] = None
    mounts: list[MachineMount] | None = None
    metrics: MachineMetrics | None = None
    files: list[MachineFile] | None = None
    metadata: dict[str, str] | None = None
    stop_config: StopConfig | None = None
    dns: DNSConfig | None = None
    standbys: list[str] | None = None
    containers: list[dict[str, Any]] | None = None
    rootfs: MachineRootfs | None = None

    @field_validator("image")
    @classmethod
    def _image_named(cls, value: str, info: ValidationInfo) -> str:
        if not value and not from_server(info):
            raise ValueError("must name an image")
        return value

    @model_validator(mode="after")
    def _guest_or_size(self, info: ValidationInfo) -> Self:
        if self.guest is not None and self.size is not None and not from_server(info):
            raise ValueError("guest and size are mutually exclusive; set only one")
        return self
