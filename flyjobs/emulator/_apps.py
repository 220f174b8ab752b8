"""Apps and their secrets."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ._ids import now_ms, rfc3339

__all__ = ("AppRecord", "Secret")


@dataclass(slots=True)
class Secret:
    """One app secret; its value is only shown when asked for (``show_secrets``)."""

    name: str
    value: str
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_dict(self, *, show_value: bool) -> dict[str, Any]:
        """The secret as the API lists it."""
        body: dict[str, Any] = {
            "name": self.name,
            "digest": hashlib.sha256(self.value.encode()).hexdigest()[:16],
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }
        if show_value:
            body["value"] = self.value
        return body


@dataclass(slots=True)
class AppRecord:
    """A Fly app: a name in an organization, owning machines and secrets."""

    name: str
    org_slug: str
    network: str = "default"
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    created_at_ms: int = field(default_factory=now_ms)
    secrets: dict[str, Secret] = field(default_factory=dict)
    #: Bumped on every secrets change (the API's secrets ``version``).
    secrets_version: int = 0
    #: Machines made so far: the next one's `MachineRecord.serial`.
    machines_made: int = 0

    def secret_values(self) -> dict[str, str]:
        """Secret name → value, as injected into a machine's environment."""
        return {name: secret.value for name, secret in self.secrets.items()}

    def set_secrets(self, values: dict[str, str | None]) -> None:
        """Set (or, for None, remove) several secrets in one version."""
        for name, value in values.items():
            if value is None:
                self.secrets.pop(name, None)
            elif name in self.secrets:
                self.secrets[name].value = value
                self.secrets[name].updated_at = time.time()
            else:
                self.secrets[name] = Secret(name, value)
        self.secrets_version += 1

    def to_dict(self, machine_count: int) -> dict[str, Any]:
        """The app as ``GET /v1/apps/{app}`` returns it."""
        return {
            "id": self.id,
            "name": self.name,
            "status": "deployed" if machine_count else "pending",
            "organization": {"name": self.org_slug, "slug": self.org_slug},
            "machine_count": machine_count,
            "volume_count": 0,
            "network": self.network,
        }
