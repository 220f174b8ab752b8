"""Fly's prices: the dated table shipped with flyjobs (``prices.toml``), or the user's own.

Fly has no pricing API, so the table is copied from Fly's pricing page; its ``source`` and
``as_of`` say from where and when. A user overrides it with ``[tool.flyjobs] prices =
"file.toml"`` or ``FLYJOBS_PRICES`` (the same keys; see the shipped file). A started machine
costs its guest's price (cpu kind, cpus, memory) per second, times its region's markup; a
region the table does not know (the emulator's ``lcl``) is priced at the base rate. A stopped
machine costs its root filesystem's size.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError

__all__ = ("Guest", "PriceTable", "load_prices", "prices_for")

_SHIPPED = "prices.toml"


@dataclass(frozen=True, slots=True)
class Guest:
    """A machine's size: cpu kind (``shared`` or ``performance``), cpus, memory in MB."""

    cpu_kind: str
    cpus: int
    memory_mb: int


@dataclass(frozen=True)
class PriceTable:
    """Prices in USD; see the module docstring.

    :ivar source: where the prices were copied from (a URL).
    :ivar as_of: the date they were copied (``YYYY-MM-DD``).
    :ivar path: the file they were read from.
    """

    source: str
    as_of: str
    path: Path
    seconds_per_month: float
    memory_usd_per_gb_month: float
    cpu_kinds: Mapping[str, tuple[float, int]]
    presets: Mapping[Guest, float]
    region_markup: Mapping[str, float]
    sizes: Mapping[str, Guest]
    rootfs_usd_per_gb_month: float

    def usd_per_s(self, guest: Guest, region: str | None = None) -> float:
        """USD per second a started machine of ``guest`` costs in ``region``: Fly's preset
        price, else its cpus' price plus the memory beyond what they include; times the
        region's markup (1 for a region the table does not know)."""
        monthly = self.presets.get(guest)
        if monthly is None:
            per_cpu, included_mb = self.cpu_kinds.get(guest.cpu_kind, self.cpu_kinds["shared"])
            extra_gb = max(0, guest.memory_mb - included_mb * guest.cpus) / 1024
            monthly = guest.cpus * per_cpu + extra_gb * self.memory_usd_per_gb_month
        return monthly / self.seconds_per_month * self.region_markup.get(region or "", 1.0)

    def rootfs_usd_per_s(self, size_gb: float) -> float:
        """USD per second a stopped machine's root filesystem of ``size_gb`` GB costs."""
        return size_gb * self.rootfs_usd_per_gb_month / self.seconds_per_month

    def guest_of(self, config: Mapping[str, Any] | None) -> Guest:
        """The guest a machine config asks for: its ``guest``, or its named ``size``, or Fly's
        default (shared, 1 cpu, 256 MB)."""
        config = config or {}
        size = config.get("size")
        if size and size in self.sizes:
            return self.sizes[size]
        guest = config.get("guest") or {}
        return Guest(
            str(guest.get("cpu_kind") or "shared"),
            int(guest.get("cpus") or 1),
            int(guest.get("memory_mb") or 256),
        )


def prices_for(path: Path | None) -> PriceTable:
    """The table at ``path`` (the settings' ``prices``), or the shipped one for None.

    :raises ConfigError: the file is missing or not a price table; the message names it.
    """
    if path is None:
        with resources.as_file(resources.files(__package__ or "flyjobs._cost") / _SHIPPED) as p:
            return load_prices(p)
    return load_prices(path)


@functools.lru_cache(maxsize=8)
def load_prices(path: Path) -> PriceTable:
    """Read a price table (cached per path).

    :raises ConfigError: the file cannot be read, is not TOML, or lacks a key or has one of the
        wrong type; the message names the file, the key and what to give.
    """
    where = f"price table {path} (FLYJOBS_PRICES or [tool.flyjobs] prices)"
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    try:
        kinds = {
            str(kind): (_number(row["usd_per_cpu_month"]), int(row["included_mb_per_cpu"]))
            for kind, row in data["cpu_kinds"].items()
        }
        if "shared" not in kinds:
            raise KeyError("cpu_kinds.shared")
        presets = {}
        for key, monthly in data.get("presets", {}).items():
            kind, cpus, memory = str(key).rsplit("-", 2)
            presets[Guest(kind, int(cpus), int(memory))] = _number(monthly)
        return PriceTable(
            source=str(data["source"]),
            as_of=str(data["as_of"]),
            path=Path(path),
            seconds_per_month=_number(data.get("seconds_per_month", 2592000)),
            memory_usd_per_gb_month=_number(data["memory_usd_per_gb_month"]),
            cpu_kinds=kinds,
            presets=presets,
            region_markup={str(r): _number(m) for r, m in data.get("region_markup", {}).items()},
            sizes={
                str(name): Guest(str(kind), int(cpus), int(memory))
                for name, (kind, cpus, memory) in data.get("sizes", {}).items()
            },
            rootfs_usd_per_gb_month=_number(data.get("rootfs", {}).get("usd_per_gb_month", 0.0)),
        )
    except KeyError as exc:
        raise ConfigError(
            f"{where} lacks {exc.args[0]!r}: copy the shipped flyjobs/_cost/{_SHIPPED} and change"
            " its prices"
        ) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{where} has a value of the wrong type ({exc}): see the shipped"
            f" flyjobs/_cost/{_SHIPPED} for each key's form"
        ) from None


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{value!r} is not a price (a number of USD, at least 0)")
    return float(value)
