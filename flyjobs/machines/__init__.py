"""Typed async client of the Fly Machines REST API.

``async with MachinesClient() as fly:`` talks to ``api.machines.dev``, to
``http://_api.internal:4280`` or to the local emulator, chosen by base URL alone. Errors are the
classes of `flyjobs._exceptions`; configs and answers are the pydantic models below.
"""

from __future__ import annotations

from ._actions import WaitState as WaitState
from ._client import MachinesClient as MachinesClient
from ._config_models import DNSConfig as DNSConfig
from ._config_models import EnvFrom as EnvFrom
from ._config_models import MachineCheck as MachineCheck
from ._config_models import MachineConfig as MachineConfig
from ._config_models import MachineFile as MachineFile
from ._config_models import MachineGuest as MachineGuest
from ._config_models import MachineHTTPHeader as MachineHTTPHeader
from ._config_models import MachineInit as MachineInit
from ._config_models import MachineMetrics as MachineMetrics
from ._config_models import MachineMount as MachineMount
from ._config_models import MachinePort as MachinePort
from ._config_models import MachineProcess as MachineProcess
from ._config_models import MachineRestart as MachineRestart
from ._config_models import MachineRootfs as MachineRootfs
from ._config_models import MachineSecret as MachineSecret
from ._config_models import MachineService as MachineService
from ._config_models import MachineServiceConcurrency as MachineServiceConcurrency
from ._config_models import StopConfig as StopConfig
from ._core import DEFAULT_BASE_URL as DEFAULT_BASE_URL
from ._core import RateLimitSetting as RateLimitSetting
from ._held import HeldLease as HeldLease
from ._http import paced_already as paced_already
from ._http import patient_until as patient_until
from ._lease import LeaseScope as LeaseScope
from ._ratelimit import Rate as Rate
from ._ratelimit import RateLimits as RateLimits
from ._response_models import App as App
from ._response_models import AppOrganization as AppOrganization
from ._response_models import AppSecret as AppSecret
from ._response_models import AppsPage as AppsPage
from ._response_models import CheckStatus as CheckStatus
from ._response_models import EventRequest as EventRequest
from ._response_models import ExecResult as ExecResult
from ._response_models import ExitEvent as ExitEvent
from ._response_models import ImageRef as ImageRef
from ._response_models import Lease as Lease
from ._response_models import LogEntry as LogEntry
from ._response_models import LogsPage as LogsPage
from ._response_models import Machine as Machine
from ._response_models import MachineEvent as MachineEvent
from ._response_models import MonitorEvent as MonitorEvent
from ._response_models import StartResult as StartResult
from ._response_models import StrippedLease as StrippedLease
from ._response_models import WaitResult as WaitResult
from ._retry import RetryPolicy as RetryPolicy

__all__ = (
    "paced_already",
    "patient_until",
    "DEFAULT_BASE_URL",
    "App",
    "AppOrganization",
    "AppSecret",
    "AppsPage",
    "CheckStatus",
    "DNSConfig",
    "EnvFrom",
    "EventRequest",
    "ExecResult",
    "ExitEvent",
    "HeldLease",
    "ImageRef",
    "Lease",
    "LeaseScope",
    "LogEntry",
    "LogsPage",
    "Machine",
    "MachineCheck",
    "MachineConfig",
    "MachineEvent",
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
    "MachinesClient",
    "MonitorEvent",
    "Rate",
    "RateLimitSetting",
    "RateLimits",
    "RetryPolicy",
    "StartResult",
    "StopConfig",
    "StrippedLease",
    "WaitResult",
    "WaitState",
)
