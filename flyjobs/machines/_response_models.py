"""Pydantic models of the Machines API's answers (``Machine``, ``MachineEvent``, ``Lease``, ...).

Every model keeps fields it does not know (``extra="allow"``), so a newer Fly does not break an
older flyjobs, and none of them re-checks values (they are parsed with ``SERVER_CONTEXT``). States,
event types and similar enumerations are plain strings for the same reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from ._config_models import MachineConfig

__all__ = (
    "App",
    "AppOrganization",
    "AppsPage",
    "AppSecret",
    "CheckStatus",
    "EventRequest",
    "ExecResult",
    "ExitEvent",
    "ImageRef",
    "Lease",
    "LogEntry",
    "LogsPage",
    "Machine",
    "MachineEvent",
    "MonitorEvent",
    "StartResult",
    "StrippedLease",
    "WaitResult",
)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ExitEvent(_Response):
    """How the machine's main process ended (``request.exit_event`` of an ``exit`` event).

    Fly's Go server omits zero values, so a missing code or flag reads as 0 / False.
    """

    exit_code: int = 0
    guest_exit_code: int = 0
    guest_signal: int = 0
    signal: int = 0
    oom_killed: bool = False
    requested_stop: bool = False
    restarting: bool = False
    #: When the process exited (Fly sends Unix milliseconds or RFC 3339).
    exited_at: datetime | None = None


class MonitorEvent(_Response):
    """The ``request.MonitorEvent`` wrapper under which some hosts report the exit event."""

    exit_event: ExitEvent | None = None


class EventRequest(_Response):
    """The ``request`` object of a machine event."""

    exit_event: ExitEvent | None = None
    monitor_event: MonitorEvent | None = Field(default=None, alias="MonitorEvent")
    restart_count: int | None = None


class MachineEvent(_Response):
    """One entry of a machine's event log (``launch``, ``start``, ``exit``, ``destroy``, ...)."""

    id: str | None = None
    type: str = ""
    status: str = ""
    source: str | None = None
    #: Unix time in milliseconds.
    timestamp: int = 0
    request: EventRequest | None = None

    @property
    def exit_event(self) -> ExitEvent | None:
        """The exit details, found under ``request.exit_event`` or
        ``request.MonitorEvent.exit_event``; ``None`` when the event carries none."""
        if self.request is None:
            return None
        if self.request.exit_event is not None:
            return self.request.exit_event
        monitor = self.request.monitor_event
        return monitor.exit_event if monitor is not None else None


class ImageRef(_Response):
    """The resolved image of a machine."""

    registry: str | None = None
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    labels: dict[str, str] | None = None


class CheckStatus(_Response):
    """The latest result of one health check."""

    name: str | None = None
    status: str | None = None
    output: str | None = None
    updated_at: datetime | None = None


class StrippedLease(_Response):
    """The lease shown inside a machine (no nonce)."""

    owner: str | None = None
    description: str | None = None
    #: Unix time in seconds.
    expires_at: int | None = None


class Machine(_Response):
    """A machine as Fly reports it (``GET /apps/{app}/machines/{id}``)."""

    id: str
    name: str | None = None
    state: str | None = None
    region: str | None = None
    #: The current version (a 26-character ULID); ``instance_id`` is its deprecated alias.
    version: str | None = None
    instance_id: str | None = None
    private_ip: str | None = None
    config: MachineConfig | None = None
    incomplete_config: dict[str, Any] | None = None
    image_ref: ImageRef | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: Newest first, as Fly sends them.
    events: list[MachineEvent] = Field(default_factory=list)
    checks: list[CheckStatus] | None = None
    host_status: str | None = None
    cordoned: bool | None = None
    lease: StrippedLease | None = None
    #: Only set by a create that asked for ``lease_ttl``.
    nonce: str | None = None

    @property
    def exit_event(self) -> ExitEvent | None:
        """The exit details of the most recent ``exit`` event, if any."""
        exits = [e for e in self.events if e.type == "exit" and e.exit_event is not None]
        if not exits:
            return None
        return max(exits, key=lambda e: e.timestamp).exit_event


class Lease(_Response):
    """A lease on a machine. Fly wraps it in ``{"status": "success", "data": {...}}``; the flat
    form of the spec is accepted too."""

    nonce: str | None = None
    #: Unix time in seconds.
    expires_at: int | None = None
    owner: str | None = None
    description: str | None = None
    version: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            return data["data"]
        return data


class WaitResult(_Response):
    """The answer of a successful wait (Fly's ``WaitMachineResponse``)."""

    ok: bool = True
    #: The state reached, when Fly reports it.
    state: str | None = None
    version: str | None = None
    event_id: str | None = None


class StartResult(_Response):
    """The answer of a start."""

    previous_state: str | None = None
    message: str | None = None
    status: str | None = None


class ExecResult(_Response):
    """The output of a command run with exec. Fly answers 200 even when the command failed:
    check ``exit_code``."""

    exit_code: int = 0
    exit_signal: int = 0
    stdout: str = ""
    stderr: str = ""


class AppOrganization(_Response):
    """The organization an app belongs to."""

    name: str | None = None
    slug: str | None = None


class App(_Response):
    """A Fly app. After `MachinesClient.create_app` only ``id`` and ``name`` are known."""

    id: str | None = None
    name: str
    status: str | None = None
    organization: AppOrganization | None = None
    machine_count: int | None = None
    volume_count: int | None = None
    network: str | None = None


class AppsPage(_Response):
    """One page of ``GET /v1/apps`` (Fly's ``ListAppsResponse``)."""

    apps: list[App] = Field(default_factory=list)
    total_apps: int | None = None
    next_cursor: str | None = None


class AppSecret(_Response):
    """An app secret. ``value`` is only sent when asked for, and never shown in a repr."""

    name: str
    digest: str | None = None
    value: SecretStr | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: The app's secrets version after a set (pass it as ``min_secrets_version``).
    version: int | None = None


class LogEntry(_Response):
    """One line of an app's logs (the ``attributes`` of an entry of Fly's logs API)."""

    message: str = ""
    timestamp: datetime | None = None
    level: str | None = None
    #: The machine id.
    instance: str | None = None
    region: str | None = None


class LogsPage(_Response):
    """A page of logs; pass ``next_token`` to the next `MachinesClient.get_logs` to go on."""

    entries: list[LogEntry] = Field(default_factory=list)
    next_token: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_fly(cls, data: Any) -> Any:
        # Fly's shape: {"data": [{"id", "attributes": {...}}], "meta": {"next_token"}}.
        if isinstance(data, dict) and "data" in data:
            rows = data.get("data") or []
            meta = data.get("meta") or {}
            return {
                "entries": [row.get("attributes", {}) for row in rows if isinstance(row, dict)],
                "next_token": meta.get("next_token") if isinstance(meta, dict) else None,
            }
        return data
