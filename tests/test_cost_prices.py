"""The price table: the one shipped is dated and sourced, prices a guest by its kind, cpus and
memory in its region (an unknown region at the base rate), and a user's own replaces it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from flyjobs._cost.ledger import billed_seconds
from flyjobs._cost.prices import Guest, prices_for
from flyjobs._exceptions import ConfigError
from flyjobs._settings import Settings
from flyjobs.machines import MachineEvent

SHIPPED = Path(__file__).parent.parent / "flyjobs" / "_cost" / "prices.toml"
MONTH_S = 30 * 24 * 3600


def test_shipped_table_says_where_and_when_its_prices_come_from() -> None:
    table = prices_for(None)
    assert table.source.startswith("https://fly.io/")
    assert len(table.as_of) == 10 and table.as_of[4] == "-"
    assert table.path.name == "prices.toml"


@pytest.mark.parametrize(
    ("guest", "monthly"),
    [
        (Guest("shared", 1, 256), 1.94),
        (Guest("shared", 1, 1024), 5.70),
        (Guest("shared", 2, 4096), 21.40),
        (Guest("performance", 1, 2048), 31.00),
        (Guest("performance", 4, 8192), 124.00),
        # Not a preset: cpus plus the memory beyond what they include.
        (Guest("shared", 1, 768), 1.94 + 0.5 * 5.0),
        (Guest("performance", 2, 6144), 62.0 + 2 * 5.0),
    ],
)
def test_a_guest_costs_its_monthly_price_per_second(guest: Guest, monthly: float) -> None:
    assert prices_for(None).usd_per_s(guest, "iad") == pytest.approx(monthly / MONTH_S)


def test_an_unknown_region_is_priced_at_the_base_rate_and_a_marked_up_one_higher() -> None:
    table = prices_for(None)
    guest = Guest("shared", 1, 1024)
    assert table.usd_per_s(guest, "lcl") == table.usd_per_s(guest, None)
    assert table.usd_per_s(guest, "sjc") == pytest.approx(table.usd_per_s(guest, "iad") * 1.19)


def test_stopped_rootfs_costs_15_cents_a_gb_for_30_days() -> None:
    assert prices_for(None).rootfs_usd_per_s(2.0) * MONTH_S == pytest.approx(0.30)


def test_a_named_size_is_its_guest() -> None:
    table = prices_for(None)
    assert table.guest_of({"size": "performance-2x"}) == Guest("performance", 2, 4096)
    assert table.guest_of({"guest": {"cpu_kind": "shared", "cpus": 2, "memory_mb": 1024}}) == (
        Guest("shared", 2, 1024)
    )
    assert table.guest_of(None) == Guest("shared", 1, 256)


def _own_table(folder: Path, shared_month: float) -> Path:
    text = SHIPPED.read_text().replace(
        "usd_per_cpu_month = 1.94", f"usd_per_cpu_month = {shared_month}"
    )
    text = text.replace('"shared-1-256" = 1.94', f'"shared-1-256" = {shared_month}')
    path = folder / "my-prices.toml"
    path.write_text(text)
    assert tomllib.loads(text)["cpu_kinds"]["shared"]["usd_per_cpu_month"] == shared_month
    return path


def test_pyproject_prices_replace_the_shipped_table(tmp_path: Path) -> None:
    _own_table(tmp_path, 100.0)
    (tmp_path / "pyproject.toml").write_text('[tool.flyjobs]\nprices = "my-prices.toml"\n')
    settings = Settings.load(environ={}, cwd=tmp_path)
    assert settings.prices == tmp_path / "my-prices.toml"
    price = prices_for(settings.prices).usd_per_s(Guest("shared", 1, 256))
    assert price == pytest.approx(100.0 / MONTH_S)


def test_env_var_names_the_price_table(tmp_path: Path) -> None:
    path = _own_table(tmp_path, 50.0)
    settings = Settings.load(environ={"FLYJOBS_PRICES": str(path)}, cwd=tmp_path)
    assert prices_for(settings.prices).usd_per_s(Guest("shared", 1, 256)) == pytest.approx(
        50.0 / MONTH_S
    )


def test_a_bad_price_table_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml.*cannot be read"):
        prices_for(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text('source = "x"\nas_of = "2026-01-01"\n')
    with pytest.raises(ConfigError, match="broken.toml.*lacks .cpu_kinds."):
        prices_for(broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(SHIPPED.read_text().replace("= 5.00", '= "five"'))
    with pytest.raises(ConfigError, match="wrong type"):
        prices_for(wrong)
    (tmp_path / "pyproject.toml").write_text("[tool.flyjobs]\nprices = 3\n")
    with pytest.raises(ConfigError, match="prices=3"):
        Settings.load(environ={}, cwd=tmp_path)


def test_billed_seconds_pair_each_start_with_the_exit_after_it() -> None:
    def event(kind: str, at_ms: int) -> MachineEvent:
        return MachineEvent(type=kind, timestamp=at_ms)

    # Newest first, as Fly sends them: two runs (restarts), launch and destroy not billed.
    events = [
        event("destroy", 9_500),
        event("exit", 9_000),
        event("start", 8_000),
        event("exit", 3_500),
        event("start", 1_000),
        event("launch", 500),
    ]
    assert billed_seconds(events) == 3.5
    # A machine still started counts until now.
    assert billed_seconds([event("start", 1_000)], now_ms=2_250) == 1.25
    assert billed_seconds([event("start", 1_000)]) == 0.0
    # Suspended from 2 s to 7 s (its "suspending" and "suspended" events), resumed, exited.
    suspended = [
        event("start", 1_000),
        event("suspend", 2_000),
        event("suspend", 2_100),
        event("start", 7_000),
        event("exit", 8_000),
    ]
    assert billed_seconds(suspended) == 2.0
